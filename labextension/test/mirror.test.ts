import { applyChange, IOutput, outputChange } from '../src/mirror';

const msg = (msg_type: string, content: object) => ({ header: { msg_type }, content });
const widgetView = {
  output_type: 'display_data',
  data: { 'application/vnd.jupyter.widget-view+json': { model_id: 'abc' }, 'text/html': 'train: starting…' },
  metadata: {}
};

describe('mirroring the outputs of a followed cell', () => {
  it('turns each output message into the nbformat output the running page would have added', () => {
    expect(outputChange(msg('stream', { name: 'stdout', text: 'train: 5/5 steps\n' }))).toEqual({
      add: { output_type: 'stream', name: 'stdout', text: 'train: 5/5 steps\n' },
      replacesLive: false
    });
    const error = outputChange(msg('error', { ename: 'E', evalue: 'v', traceback: ['t'] }));
    expect(error).toEqual({
      add: { output_type: 'error', ename: 'E', evalue: 'v', traceback: ['t'] },
      replacesLive: false
    });
    expect(outputChange(msg('clear_output', { wait: false }))).toEqual({ clear: true });
    expect(outputChange(msg('status', { execution_state: 'idle' }))).toBeNull();
    expect(outputChange(msg('comm_msg', { data: {} }))).toBeNull();
  });

  it("puts the final chart (the update of the chart's display) in place of the live widget, keeping the rest", () => {
    const before: IOutput[] = [{ output_type: 'stream', name: 'stdout', text: 'loading\n' }, widgetView];
    const figure = { 'application/vnd.plotly.v1+json': { data: [], layout: {} }, 'text/plain': 'step 60/60' };
    const update = outputChange(
      msg('update_display_data', { data: figure, metadata: {}, transient: { display_id: 'x' } })
    );
    const after = applyChange(before, update!);
    expect(after).toEqual([before[0], { output_type: 'display_data', data: figure, metadata: {} }]);
    // a plain display is added after what is there
    const shown = applyChange(after, outputChange(msg('display_data', { data: { 'text/plain': 'x' }, metadata: {} }))!);
    expect(shown).toHaveLength(3);
    expect(applyChange(shown, { clear: true })).toEqual([]);
  });
});
