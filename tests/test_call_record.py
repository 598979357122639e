"""The call record (hebm.sampler.record.LANGEVIN / REVERSE) is the one list of a call's arguments: every
consumer derives from it or is checked against it here — the entry points' signatures, the checked
call (LangevinArgs), the op schema and its slots in csrc/call_record.h (which the compiled ops read
their arguments by), the graph backend's static buffers, the Triton launcher's kernel parameters."""
from __future__ import annotations

import ast
import inspect
import pathlib

import pytest
import torch

import hebm
from hebm.sampler.backends import _build, ops
from hebm.sampler.record import LANGEVIN, REVERSE, LangevinArgs, ReverseArgs

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_generated_header_is_current():
    """csrc/call_record.h is what `python -m hebm.sampler.backends.ops --header` writes from the record now."""
    committed = (_build.csrc_dir() / "call_record.h").read_text()
    assert committed == ops.header(), ("csrc/call_record.h differs from the call record: regenerate it with "
                                       "`python -m hebm.sampler.backends.ops --header` (and rebuild the extensions)")


def _keywords(fn) -> list:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


def test_entry_points_take_the_record_keywords():
    want = [(f.name, f.default) for f in LANGEVIN[1:]]
    assert _keywords(hebm.langevin_ref) == want + [("return_info", False)]
    assert _keywords(hebm.langevin_fused)[:len(want)] == want
    assert _keywords(hebm.Sampler.run)[:len(want)] == want
    rev = [(f.name, f.default) for f in REVERSE[1:]]
    assert _keywords(hebm.reverse_diffusion_ref)[:len(rev)] == rev
    assert _keywords(hebm.reverse_diffusion)[:len(rev)] == rev
    assert _keywords(hebm.Sampler.reverse_diffusion)[:len(rev)] == rev
    for fn in (hebm.langevin_ref, hebm.reverse_diffusion_ref):  # and their docstrings list every keyword
        record = LANGEVIN if fn is hebm.langevin_ref else REVERSE
        assert all(f"    {f.name}: " in fn.__doc__ for f in record)


def test_the_checked_call_has_one_attribute_per_field():
    names = [f.name for f in dataclasses_fields(LangevinArgs)]
    assert sorted(names) == sorted([f.name for f in LANGEVIN] + ["as_list", "draws"])  # (draws: trace_every's sink)
    rnames = {f.name for f in dataclasses_fields(ReverseArgs)}
    assert {f.name for f in REVERSE if f.name not in ("u_T", "batch")} <= rnames


def dataclasses_fields(cls):
    import dataclasses
    return dataclasses.fields(cls)


def test_the_op_schema_is_the_record_in_order():
    """The registered schema lists the network, then every record field with an op type in the
    record's order, then the op's options; the fake kernels read them by the same names."""
    for name, args, record in (("langevin", ops.LANGEVIN_ARGS, LANGEVIN), ("reverse_diffusion", ops.REVERSE_ARGS,
                                                                           REVERSE)):
        schema = ops.op(name).default._schema
        assert [a.name for a in schema.arguments] == [n for n, _ in args]
        fields = [n for n, _ in args if n in {f.name for f in record}]
        assert fields == [f.name for f in record if f.op is not None]
        for a, (n, t) in zip(schema.arguments, args):
            assert str(a.type).replace("Optional[", "").rstrip("]") in (
                {"Tensor": "Tensor", "Tensor?": "Tensor", "int": "int", "int?": "int", "bool": "bool", "str": "str",
                 "float": "float", "int[]": "List[int", "float[]": "List[float", "Tensor[]": "List[Tensor"}[t],), (n, t)


def test_unknown_keywords_are_named_by_the_entry_point():
    prior = hebm.HierarchicalPrior((2, 2), prior_hidden=(4,), energy_hidden=(4,))
    u = torch.zeros(3, 4)
    sampler = hebm.Sampler(prior)
    for fn, where in ((hebm.langevin_ref, "langevin_ref"), (hebm.langevin_fused, "langevin_fused"),
                      (lambda p, x, **k: sampler.run(x, **k), "Sampler.run")):
        with pytest.raises(TypeError, match=rf"^{where}\(\) got an unexpected keyword argument 'temperature'; its "
                                            rf"keywords are n_steps, step_size"):
            fn(prior, u, n_steps=1, step_size=0.1, seed=0, temperature=2.0)
    with pytest.raises(TypeError, match=r"^langevin_fused\(\) missing required keyword argument 'step_size'"):
        hebm.langevin_fused(prior, u, n_steps=1, seed=0)


def test_the_graph_backend_keeps_every_per_chain_field_in_static_buffers():
    from hebm.sampler.backends import graph
    want = {f.name for f in LANGEVIN[1:] if f.kind in ("chain", "level", "state", "ids")}
    assert set(graph._STATIC) == want and {"step_size", "t", "u_next", "chain_ids"} <= want


def _kernel_signature(path: pathlib.Path) -> list:
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "langevin_kernel")
    return [a.arg for a in fn.args.args]


def test_the_triton_parameters_carry_the_record():
    """The generated kernel's signature is the launcher's PARAMS (plus BLOCK_B), and every op field
    of the record is carried by a parameter, is a compile-time flag of the kernel spec, or is refused by
    name (REFUSED_FIELDS: the backend's unsupported says so)."""
    pytest.importorskip("triton")
    from hebm.sampler.backends import triton_backend as tb
    sig = _kernel_signature(ROOT / "kernels" / "generated" / "small_seeded_kernel.py")
    assert sig == [n for n, _ in tb.PARAMS] + ["BLOCK_B"]
    carried = ({f for _, f in tb.PARAMS + tb.LADDER_PARAMS if f is not None} | set(tb.SPEC_FIELDS)
               | set(tb.REFUSED_FIELDS))
    assert {f.name for f in LANGEVIN if f.op is not None} == carried
    # the same holds for kernels generated now with the optional inputs on: the Metropolis one
    # (register form) and a streamed reverse diffusion
    from hebm.kernels import generate_source
    p = hebm.standard_problem("toy", 4)
    pk, _ = tb.packed(p.prior)
    for kw in (dict(unext_from_state=False, seeded=False, trace=True, store_levels=False, precision="tf32",
                    metropolis=True),
               dict(unext_from_state=True, seeded=True, trace=False, store_levels=True, precision="fp32")):
        src = generate_source(tb.kernel_spec(pk.network, has_kernel=True, interpret=False, **kw))[0]
        fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "langevin_kernel")
        assert [a.arg for a in fn.args.args] == [n for n, _ in tb.PARAMS] + ["BLOCK_B"]
    # a ladder kernel (replica exchange, register form: tf32 on the GPU) takes LADDER_PARAMS after them
    for mala in (False, True):
        src = generate_source(tb.kernel_spec(pk.network, has_kernel=False, unext_from_state=False, seeded=True,
                                             trace=True, store_levels=False, precision="tf32", interpret=False,
                                             metropolis=mala, draws=True, ladder="even_odd"))[0]
        fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "langevin_kernel")
        assert [a.arg for a in fn.args.args] == [n for n, _ in tb.PARAMS + tb.LADDER_PARAMS] + ["BLOCK_B"]


def test_the_compiled_ops_read_their_slots_from_the_header():
    """The C++ op bodies name no argument list of their own: they read slots through the generated
    macros (csrc/network.h HEBM_FILL_<KIND>), and check the schema's names against the header."""
    for path in (ROOT / "csrc" / "ops.cpp", ROOT / "csrc" / "cuda" / "langevin_cuda.cpp"):
        src = path.read_text()
        assert "HEBM_LANGEVIN_FIELDS(HEBM_READ)" in src and "HEBM_REVERSE_FIELDS(HEBM_READ)" in src, path
        assert "check_schema(op, kLangevinArgNames" in src.replace("hebm::", ""), path
        assert "makeFromBoxedFunction" in src, path
