// The page's declaration of the kernel-page protocol (src/protocol.ts) against the kernel's: test/protocol.json
// is written from llm_magics/frontend.py's TypedDicts (`python -m llm_magics protocol`), and
// tests/test_labextension.py fails when the committed file differs from what Python writes now.
import { ourMessage } from '../src/magic';
import { COMM_TARGET, FIELDS, MESSAGE_SOURCE } from '../src/protocol';
import kernel from './protocol.json';

describe('protocol.ts', () => {
  it('has the kernel’s comm target and message source', () => {
    expect(COMM_TARGET).toBe(kernel.comm_target);
    expect(MESSAGE_SOURCE).toBe(kernel.source);
  });
  it('has the kernel’s message kinds, each with its fields, required and optional alike', () => {
    expect(Object.keys(FIELDS.to_page).sort()).toEqual(Object.keys(kernel.to_page).sort());
    expect(Object.keys(FIELDS.to_kernel).sort()).toEqual(Object.keys(kernel.to_kernel).sort());
    expect(FIELDS).toEqual(kernel);
  });
  it('reads every kind the kernel sends as ours', () => {
    for (const type of Object.keys(kernel.to_page)) {
      const data = { type, source: kernel.source };
      expect(ourMessage({ header: { msg_type: 'comm_msg' }, content: { data } })).toEqual(data);
    }
  });
});
