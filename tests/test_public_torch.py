"""The library uses public torch only: a torch release that renames a private function cannot break it or silently
route around it. Scanned in the source: no torch name with a leading underscore (``torch.__version__`` aside), no
``torch.ops``, no ``.data``, no ``._version``, no writes into a module's private dictionaries; overriding
``nn.Module._load_from_state_dict`` for state migration is the one exception (a documented hook)."""
import pathlib
import re

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src" / "stochgrad"
FORBIDDEN = {
    r"torch\._(?!_)": "a private torch name",
    r"\btorch\.ops\b": "torch.ops (aten overloads)",
    r"(?<=[\w)\]])(?<!stochgrad)\.data\b": "Tensor.data",
    r"\._version\b": "Tensor._version",
    r"\b_(buffers|modules|parameters)\b": "nn.Module's private dictionaries",
    r"__dict__\[": "a write past nn.Module.__setattr__",
    r"_engine_run_backward|unwrap_if_dead|_are_functorch_transforms_active": "autograd's private entry points",
    r"super\(torch\.autograd\.Function": "autograd.Function.apply's private body",
}


def test_the_source_uses_public_torch_only():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN.items():
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(SOURCE.parent)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
    samples = ["x = torch._C._foo()", "torch.ops.aten.sigmoid_backward", "t.data.sum()", "v = t._version",
               "self._buffers[name] = b", "self.__dict__['x'] = 1", "from torch.autograd.graph import _engine_run_backward",
               "super(torch.autograd.Function, F).apply"]
    for text in samples:
        assert any(re.search(p, text) for p in FORBIDDEN), text
    for text in ("torch.__version__", "the datasets of :mod:`stochgrad.data`", "from .data import load"):
        assert not any(re.search(p, text) for p in FORBIDDEN), text
