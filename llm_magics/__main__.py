"""`python -m llm_magics demo`: load the packaged model and generate, as a first check."""

import sys

from . import Session


def demo() -> None:
    session = Session()
    loaded = session.load("default")
    print(f"Loaded {loaded.name} on {loaded.device} ({loaded.dtype}).")
    prompt = "Once upon a time"
    print(f"\n>>> generate: {prompt}")
    print(prompt, end="")
    session.generate(prompt, max_new_tokens=40, seed=0, on_text=lambda t: print(t, end="", flush=True))
    question = "What is the capital of France?"
    print(f"\n\n>>> chat: {question}")
    reply = session.chat(question, do_sample=False, max_new_tokens=30)
    print(reply.text)


def commands() -> None:
    """The sub-commands and options, as JSON, for labextension/src/commands.json."""
    import json

    from .magics import command_spec

    print(json.dumps(command_spec(), indent=1))


def protocol() -> None:
    """The kernel-page messages and their fields, as JSON, for labextension/test/protocol.json."""
    import json

    from .frontend import protocol

    print(json.dumps(protocol(), indent=2))


if __name__ == "__main__":
    actions = {"demo": demo, "commands": commands, "protocol": protocol}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit("usage: python -m llm_magics demo|commands|protocol")
    actions[sys.argv[1]]()
