"""Shared fixtures: a real IPython shell with the extension loaded, and the real packaged weights."""

import os
from pathlib import Path

import pytest

# Test tiers, assigned here rather than in each file. `pytest -m "not slow"` is the everyday run;
# `pytest tests` (CI) runs everything.
BY_FILE = {
    "test_browser.py": ("browser", "slow"),
    "test_browser_attention.py": ("browser", "slow"),
    "test_browser_reload.py": ("browser", "slow"),
    "test_browser_chart.py": ("browser", "slow"),
    "test_notebooks.py": ("notebook", "slow"),
    "test_kernel_feedback.py": ("notebook", "slow"),
    "test_scaling.py": ("slow",),  # several processes, torch.compile
    "test_long_context.py": ("slow",),  # two forward passes of 4,096 tokens in a subprocess
}
# Tests of other files that take more than a few seconds on a 2-core machine: measured per test on the
# shared machine under heavy load (load average ~18, so each took 3-5x its quiet time), the rest of the
# list judged from what the test does (real-model generation, training past a few steps, builds).
# Re-measure with `pytest -m "not slow" --durations=20` and move entries as tests change.
SLOW = {
    # Measured on a quiet 2-core machine (2026-11-30, `--durations=0` of the fast tier): each >= 0.9 s.
    "test_option_bounds.py::test_a_value_outside_the_declared_bounds_is_one_line",  # a magic run per bound
    "test_option_bounds.py::test_lora_rank_from_python_is_a_whole_number_within_the_declared_bound",
    "test_attention.py::test_layer_image_pools_and_tiles_like_the_eager_map[default]",
    "test_attention.py::test_layer_image_pools_and_tiles_like_the_eager_map[minilm]",
    "test_attention.py::test_long_matrix_sends_a_pooled_overview_and_exact_tiles[default]",
    "test_attention.py::test_long_matrix_sends_a_pooled_overview_and_exact_tiles[minilm]",
    "test_bench_scripts.py::test_script_imports_and_shows_its_options",  # a Python process per script
    "test_attention.py::test_kept_queries_and_keys_give_every_layer[default]",
    "test_attention.py::test_layer_switch_reuses_the_one_forward_pass[default]",
    "test_attention.py::test_block_by_block_overview_equals_the_whole_capture[default]",
    "test_attention.py::test_block_by_block_overview_equals_the_whole_capture[minilm]",
    "test_lens.py::test_widget_lens_reads_out_only_the_window_in_view",
    "test_attribution.py::test_bad_input_is_one_line",
    "test_attribution.py::test_every_method_on_a_causal_model[integrated-gradients]",
    "test_attribution.py::test_magic_on_real_weights",
    "test_data_errors.py::test_interrupting_tokenization_stops_within_a_second[stop]",
    "test_error_rows.py::test_bleu_with_no_new_tokens",
    "test_eval.py::test_bleu_and_rouge_equal_sacrebleu_and_rouge_score_on_the_same_generations",
    "test_eval.py::test_perplexity_equals_a_plain_transformers_loop",
    "test_loading.py::test_default_model_is_the_packaged_smollm2_converted_once",
    "test_lr_find.py::test_a_sweep_restores_the_full_model_and_rng_bit_for_bit",
    "test_options.py::test_arch_and_tokenizer_choices_train",
    "test_options.py::test_attention_backend_widget_and_view_lens",
    "test_options.py::test_compile_backend_aot_eager_generates_the_same_greedy_text",
    "test_options.py::test_load_device_and_dtype_choices",
    "test_oracles.py::test_accuracy_and_f1_equal_scikit_learn_and_the_magic_prints_it",
    "test_oracles.py::test_system_prompt_is_in_the_templated_prompt",
    "test_patching.py::test_bad_input_is_one_line",
    "test_patching.py::test_real_weights_residual_and_heads_match_the_reference",
    "test_promises.py::test_lens_hover_lists_the_top_five",
    "test_promises.py::test_playground_keeps_the_last_three_runs",
    "test_quantization.py::test_attention_and_lens_agree_with_fp32",
    "test_quantization.py::test_int4_works_or_says_there_is_no_kernel",
    "test_quantization.py::test_int8_greedy_continuations_match_fp32",
    "test_quantization.py::test_int8_perplexity_within_3_percent_of_fp32",
    "test_quantization.py::test_int8_swaps_linear_layers_in_place_and_status_shows_the_saving",
    "test_quantization.py::test_magic_load_quantize_then_status",
    "test_runs.py::test_a_crashed_kernel_leaves_a_readable_partial_run",
    "test_runs.py::test_runs_survive_a_kernel_restart",
    "test_safety_files.py::test_a_save_killed_half_way_leaves_no_staging_folder_after_the_next_save",
    "test_safety_files.py::test_an_interrupted_checkpoint_leaves_no_partial_after_the_next_run",
    "test_safety_files.py::test_out_of_memory_run_is_recorded_with_what_it_reached",
    "test_safety_files.py::test_two_runs_sharing_an_output_dir_at_once",
    "test_safety_inputs.py::test_corrupt_arrow_file_in_a_dataset_folder_is_one_line",
    "test_safety_inputs.py::test_empty_save_to_disk_dataset_is_one_line",
    "test_safety_inputs.py::test_magic_and_api_give_the_same_perplexity_on_the_same_text",
    "test_safety_inputs.py::test_max_tokens_on_a_big_file_with_no_newline_tokenizes_only_what_it_needs",
    "test_safety_inputs.py::test_non_finite_sampling_options",
    "test_safety_inputs.py::test_non_utf8_jsonl_is_one_line_in_eval_and_finetune",
    "test_safety_inputs.py::test_num_return_sequences_0_and_lora_alpha_0_are_refused",
    "test_safety_inputs.py::test_reversed_labels_map_by_name_onto_the_existing_classifier",
    "test_safety_inputs.py::test_seq_len_shorter_than_the_chat_template_prompt_says_so",
    "test_safety_inputs.py::test_tokenized_cache_is_keyed_on_content_not_size_and_mtime",
    "test_safety_inputs.py::test_two_processes_equal_one_process_for_finetune_with_mixed_lengths[full]",
    "test_safety_inputs.py::test_two_processes_equal_one_process_for_finetune_with_mixed_lengths[lora]",
    "test_safety_interrupts.py::test_double_interrupt_during_processes_2_is_one_line_and_restores_the_kernel",
    "test_safety_interrupts.py::test_interrupt_during_attention_or_lens_is_one_line",
    "test_safety_interrupts.py::test_interrupt_during_save_is_one_line_and_keeps_the_earlier_save",
    "test_safety_interrupts.py::test_interrupt_while_datasets_is_first_imported_keeps_data_reading_working",
    "test_tokenizers.py::test_every_tokenizer_value_trains_with_that_tokenizer",
    "test_training.py::test_out_of_memory_is_one_clear_line_and_the_model_survives",
    "test_widgets.py::test_generate_widget_magic_prefills_controls",
    "test_widgets.py::test_long_runs_are_thinned_for_the_browser",
    "test_attention.py::test_capture_equals_eager_output_attentions[default]",
    "test_attention.py::test_only_asked_heads_are_computed[default]",
    "test_attention.py::test_explain_detects_and_names_the_sinks[default]",
    "test_attention.py::test_explain_gradient_x_input_and_rank_correlation",
    "test_attention.py::test_head_view_opens_on_the_top_3_heads_by_entropy[default]",
    "test_attention.py::test_snapshot_keeps_the_last_view_and_follows_the_theme[default]",
    "test_lens.py::test_lens_target_mode_against_a_hand_softmax",
    "test_lens.py::test_lens_target_magic_and_its_errors",
    "test_attention.py::test_saved_notebook_keeps_a_static_picture[default]",
    "test_attention.py::test_attention_magic",
    "test_data.py::test_record_shapes_finetune_from_files",
    "test_data.py::test_tokens_are_cached_and_reused",
    "test_data.py::test_max_tokens_and_sample_docs_take_a_prefix",
    "test_data.py::test_50mb_corpus_trains_with_flat_memory",
    "test_data_errors.py::test_out_of_memory_while_reading_or_tokenizing_is_one_line",
    "test_data_errors.py::test_interrupting_while_reading_stops_within_a_second",
    "test_eval.py::test_perplexity_drops_after_training",
    "test_eval.py::test_perplexity_of_the_pretrained_model_is_sane",
    "test_eval.py::test_bleu_and_rouge_on_generations",
    "test_eval.py::test_eval_magic_and_errors",
    "test_generate.py::test_same_seed_same_text_and_streaming_matches_result",
    "test_generate.py::test_greedy_and_several_samples",
    "test_generate.py::test_chat_answers_and_keeps_history",
    "test_generate.py::test_system_prompt_changes_the_answer",
    "test_labextension.py::test_jest_suite_passes",
    "test_labextension.py::test_kernel_side_snapshot_and_throttled_progress",
    "test_labextension.py::test_wheel_ships_the_prebuilt_extension",
    "test_labextension.py::test_a_page_that_connects_later_asks_the_kernel_even_while_it_trains",
    "test_lens.py::test_lens_equals_final_norm_and_unembedding_of_each_hidden_state",
    "test_lens.py::test_lens_magic_and_widget_tab",
    "test_loading.py::test_dtype_override",
    "test_magics.py::test_load_status_generate",
    "test_magics.py::test_chat_magic_keeps_history_and_resets",
    "test_magics.py::test_playground_and_generate_magics_take_chat_and_system",
    "test_magics.py::test_train_from_scratch_magic_loss_falls",
    "test_magics.py::test_interrupting_generation_keeps_partial_text",
    "test_magics.py::test_interrupting_training_keeps_model_and_checkpoint",
    "test_option_defaults.py::test_a_real_run_records_the_same_options_from_the_magic_and_the_api",
    "test_packaging.py::test_wheel_from_a_clean_checkout_installs_the_extension",
    "test_parsing.py::test_generate_and_chat_lines_keep_the_text",
    "test_quiet_outputs.py::test_generate_ends_with_tokens_speed_and_why_it_stopped",
    "test_safety_files.py::test_save_never_loses_the_users_files",
    "test_safety_files.py::test_a_second_run_never_removes_another_runs_checkpoints",
    "test_safety_files.py::test_resume_reproduces_an_uninterrupted_run",
    "test_safety_files.py::test_lora_finetune_with_the_same_seed_gives_the_same_losses",
    "test_safety_interrupts.py::test_session_stop_makes_the_evaluation_partial",
    "test_safety_interrupts.py::test_kernel_interrupt_stops_eval_in_the_magic",
    "test_safety_interrupts.py::test_stop_during_generation_metrics_discards_the_cut_answer",
    "test_safety_interrupts.py::test_stopped_classifier_eval_is_partial_not_a_score",
    "test_tokenizers.py::test_every_tokenizer_value_trains_with_that_tokenizer[default---tokenizer default]",
    "test_tokenizers.py::test_every_tokenizer_value_trains_with_that_tokenizer[DIR---tokenizer DIR]",
    "test_trackers.py::test_tensorboard_with_two_processes_logs_once_from_rank_0_the_history",
    "test_option_values.py::test_min_delta_decides_when_early_stopping_fires",
    "test_error_rows.py::test_finetune_resume_starts_from_the_checkpoints_weights",
    "test_error_rows.py::test_attribute_steps_and_new_tokens_of_zero",
    "test_error_rows.py::test_attribute_target_that_is_not_a_label",
    "test_error_rows.py::test_patch_prompts_with_the_same_logit_difference",
    "test_option_values.py::test_lr_find_bounds_and_each_suggestion_follow_fastai",
    "test_option_values.py::test_compare_auto_overlays_the_previous_run_and_none_overlays_nothing",
    "test_option_values.py::test_runs_plot_eval_loss_and_lr_draw_those_series",
    "test_option_values.py::test_attribution_methods_through_the_magic",
    "test_option_values.py::test_patch_sites_through_the_magic_equal_the_reference",
    "test_option_values.py::test_quantize_none_loads_the_exact_weights_after_a_quantized_load",
    "test_option_values.py::test_track_wandb_runs_offline_and_logs_the_history",
    "test_option_values.py::test_track_mlflow_writes_the_run_folder_and_a_second_run_its_own",
    "test_training.py::test_from_scratch_loss_falls_quickly",
    "test_training.py::test_checkpoint_and_resume_continue_the_same_run",
    "test_training.py::test_lora_finetune_learns_the_style_and_round_trips",
    "test_training.py::test_full_finetune_masks_prompt_tokens",
    "test_training.py::test_classifier_on_packaged_minilm_reports_accuracy_and_f1",
    "test_widgets.py::test_live_training_view_plots_every_step_throttled",
    "test_widgets.py::test_stop_button_ends_training_with_model_usable",
    "test_widgets.py::test_sampling_panel_reruns_with_changed_settings",
    "test_widgets.py::test_playground_busy_state_new_seed_per_click_and_fallback",
    "test_widgets.py::test_hover_lists_only_real_alternatives",
    "test_widgets.py::test_token_probabilities_come_from_generate_scores",
    "test_widgets.py::test_playground_typed_box_moves_the_slider_and_the_next_generate_uses_it",
    "test_widgets.py::test_playground_streams_into_the_new_column",
    "test_widgets.py::test_token_rank_probability_and_card_match_a_plain_forward_pass",
    "test_widgets.py::test_playground_columns_record_prompt_and_settings",
    "test_widgets.py::test_stop_sequence_cuts_the_output_and_the_column_says_so",
    "test_generate.py::test_stop_through_the_magic_cuts_each_sample_and_says_why",
    "test_widgets.py::test_playground_chat_template_and_system_prompt_change_the_prompt_ids",
    "test_widgets.py::test_train_magic_with_widget",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        for marker in BY_FILE.get(name, ()):
            item.add_marker(marker)
        if f"{name}::{item.originalname}" in SLOW or f"{name}::{item.name}" in SLOW:  # all params, or one
            item.add_marker("slow")


@pytest.fixture(autouse=True)
def private_runs_dir(tmp_path_factory):
    """Every test records its runs in a folder of its own, never in the repository's llm_runs/."""
    previous = os.environ.get("LLM_MAGICS_RUNS_DIR")
    os.environ["LLM_MAGICS_RUNS_DIR"] = str(tmp_path_factory.mktemp("llm_runs"))
    yield Path(os.environ["LLM_MAGICS_RUNS_DIR"])
    if previous is None:
        os.environ.pop("LLM_MAGICS_RUNS_DIR", None)
    else:
        os.environ["LLM_MAGICS_RUNS_DIR"] = previous


@pytest.fixture(scope="session")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "llm_magics")
    return ip


@pytest.fixture
def tiny_config(tmp_path):
    """A --config .json file of support.TINY_CONFIG."""
    import json

    from support import TINY_CONFIG

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


@pytest.fixture(scope="session")
def default_model_dir():
    """The de-quantized SmolLM2 (converted once, then read from the cache)."""
    from llm_magics.loading import gguf_to_safetensors, packaged_path

    return gguf_to_safetensors(packaged_path("default"))


@pytest.fixture
def cache(tmp_path, default_model_dir):
    """A private cache dir, so no test sees another's tokens; the converted default model is shared
    (a second conversion would take 20 s and print its own progress)."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "gguf").symlink_to(default_model_dir.parent, target_is_directory=True)
    previous = os.environ.get("LLM_MAGICS_CACHE")
    os.environ["LLM_MAGICS_CACHE"] = str(root)
    yield root / "data"
    # Not monkeypatch: datasets' map(num_proc=...) swaps os.environ for a copy, and monkeypatch's undo
    # would then restore the old object while the live one kept our temporary cache.
    if previous is None:
        os.environ.pop("LLM_MAGICS_CACHE", None)
    else:
        os.environ["LLM_MAGICS_CACHE"] = previous


def _load_on() -> dict:
    """Where the model fixtures load: the suite's device and dtype (support.DEVICE, support.DTYPE)."""
    from support import DEVICE, DTYPE

    return {"device": str(DEVICE), "dtype": str(DTYPE).removeprefix("torch.")}


LOAD_ON = _load_on()


@pytest.fixture
def session(default_model_dir):
    """A fresh Session with the default model loaded (0.3 s from the cache) on the suite's device."""
    from llm_magics import Session

    s = Session()
    s.load("default", **LOAD_ON)
    return s


@pytest.fixture
def magic_session(shell, default_model_dir):
    """The kernel session the magics use, with a freshly loaded default model."""
    import llm_magics

    llm_magics.session.load("default", **LOAD_ON)
    llm_magics.session.reset_chat()
    return llm_magics.session


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from browser_support import CHROMIUM

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()
