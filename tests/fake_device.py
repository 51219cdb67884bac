"""A fake accelerator for CPU-only CI. Tensors "on the device" compute on the CPU (so values are real and
generation, training and the inspectors run) but report `meta` as their device, and an operation that mixes
them with ordinary CPU tensors raises as CUDA would. So a tensor the package creates without `device=` and
then combines with the model's tensors, or a `.numpy()` of a device tensor, fails here as it would on a GPU.

Used by test_device_placement.py: `with FakeDevice() as fake: fake.put(model); ...`."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

DEVICE = torch.device("meta")  # what tensors on the fake device report
CPU = torch.device("cpu")
T = torch.Tensor
# Property reads (`x.device`) reach the mode as a fresh method-wrapper each time: compare with ==.
DEVICE_GET, IS_CPU_GET, IS_META_GET = T.device.__get__, T.is_cpu.__get__, T.is_meta.__get__
MOVES = (T.to, T.cpu, T.cuda)
# What CUDA accepts across devices: a CPU index into a device tensor, a copy, a value written into it.
CROSSING = (T.__getitem__, T.__setitem__, T.copy_, T.index_put_, T.index_put)


class WrongDevice(AssertionError):
    pass


def _device(value) -> torch.device | None:
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return DEVICE  # .to(0) / device=0: a GPU index
    return None


class FakeDevice(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.on_device: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.calls = 0  # torch calls checked, so a test can tell the mode saw the work

    def put(self, *things) -> None:
        """Place modules (their parameters and buffers) or tensors on the fake device."""
        for thing in things:
            if isinstance(thing, torch.nn.Module):
                self.put(*thing.parameters(), *thing.buffers())
            else:
                self.on_device[thing] = True

    def here(self, value) -> bool:
        return isinstance(value, T) and value in self.on_device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        self.calls += 1
        if func == DEVICE_GET:
            return DEVICE if self.here(args[0]) else func(*args)
        if func == IS_CPU_GET:
            return not self.here(args[0]) and func(*args)
        if func == IS_META_GET:
            return self.here(args[0]) or func(*args)
        if func is T.numpy and self.here(args[0]):
            raise WrongDevice("numpy() of a tensor on the device: call .cpu() first")
        target = self._target(func, args, kwargs)
        if target is None:  # an ordinary operation: its inputs must agree, and its result goes where they are
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, T)]
            on_device = any(self.here(t) for t in tensors)
            if on_device and func not in CROSSING:
                self._check(func, tensors)
            out = func(*args, **kwargs)
            if on_device:
                tree_map(lambda t: self.put(t) if isinstance(t, T) else None, out)
            return out
        # a factory with device=, or a move: the fake device computes on the CPU
        to_device = target.type != "cpu"
        if "device" in kwargs:
            kwargs["device"] = CPU
        args = tuple(CPU if _device(a) is not None and not isinstance(a, (int, T)) else a for a in args)
        if func is T.cuda:
            func, args = T.to, (args[0], CPU)
        out = func(*args, **kwargs)
        if func in MOVES and out is args[0] and self.here(out) != to_device:
            # a real move copies; on one CPU torch hands back the same tensor: give a new one
            if isinstance(out, torch.nn.Parameter):  # Module.to sets param.data: the parameter itself moves
                self.on_device.pop(out, None) if not to_device else self.put(out)
                return out
            out = out.view_as(out)
        if to_device:
            tree_map(lambda t: self.put(t) if isinstance(t, T) else None, out)
        return out

    def _target(self, func, args, kwargs) -> torch.device | None:
        """Where a move or a factory puts its result; None for an operation that follows its inputs."""
        if func is T.cpu:
            return CPU
        if func is T.cuda:
            return DEVICE
        if "device" in kwargs and kwargs["device"] is not None:
            return _device(kwargs["device"])
        if func is T.to:
            for a in args[1:]:
                if isinstance(a, T):
                    return DEVICE if self.here(a) else CPU
                if not isinstance(a, torch.dtype) and _device(a) is not None:
                    return _device(a)
        return None

    def _check(self, func, tensors) -> None:
        host = [tuple(t.shape) for t in tensors if not self.here(t) and t.dim() > 0]  # CUDA takes 0-dim CPU
        if host:
            name = getattr(func, "__name__", str(func))
            raise WrongDevice(f"{name} mixes tensors on the device with CPU tensors of shape {host}")
