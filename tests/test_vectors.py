"""Steering vectors: planted directions recovered by every method, z-bar, arithmetic, save/load."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch.nn.functional import cosine_similarity

import workbench as wb
from workbench.derivation import carry_directions
from workbench.prompts import PromptFormat
from workbench.types import LayerPair
from workbench.vectors import VectorFileError

N, D, SCALE = 2000, 16, 2.0
LAYERS = [3, 7]


def _planted(seed: int = 0):
    """without: an isotropic cloud around a random mean; with = without + SCALE * u + noise.
    (Isotropic, because the probe sees two unpaired clouds, and only for an isotropic shared
    covariance is the separating direction u itself rather than a covariance-skewed version.)"""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(len(LAYERS), D, generator=g), dim=-1)
    without = torch.randn(N, len(LAYERS), D, generator=g) + 3 * torch.randn(len(LAYERS), D, generator=g)
    with_ = without + SCALE * u + 0.3 * torch.randn(N, len(LAYERS), D, generator=g)
    return with_, without, u


def _acts(with_, without, **provenance):
    n = len(with_)
    pairs = [wb.PromptPair(str(i), f"q{i} instr", f"q{i}", "punctuation:no_comma") for i in range(n)]
    return wb.PairActivations(
        with_,
        without,
        layers=list(LAYERS),
        hook="resid_post",
        position="last",
        pairs=pairs,
        prompts_with=[p.with_instruction for p in pairs],
        prompts_without=[p.without_instruction for p in pairs],
        positions_with=[[0]] * n,
        positions_without=[[0]] * n,
        format=PromptFormat("raw"),
        provenance=dict(dict(model="synthetic", weight_hash="0" * 64, d_model=D), **provenance),
    )


@pytest.mark.parametrize("method", ["mean_diff", "pca", "probe"])
def test_registry_recovers_a_planted_direction_with_its_sign(method):
    with_, without, u = _planted()
    for slot in range(len(LAYERS)):
        raw = wb.DERIVATION_METHODS[method](with_[:, slot], without[:, slot])
        assert raw.shape == (D,)
        cos = float(cosine_similarity(raw, u[slot], dim=0))
        assert cos > 0.99, f"{method} layer slot {slot}: cos {cos:.4f}"  # sign included
        # a mirrored data set gives the mirrored direction: the sign is the data's, not luck
        flipped = float(
            cosine_similarity(wb.DERIVATION_METHODS[method](without[:, slot], with_[:, slot]), u[slot], dim=0)
        )
        assert flipped < -0.99


@pytest.mark.parametrize("method", ["mean_diff", "pca", "probe"])
def test_derive_on_planted_data(method):
    with_, without, u = _planted(seed=1)
    vec = wb.derive(_acts(with_, without), method=method)
    assert vec.layers == tuple(LAYERS) and vec.meta["method"] == method
    for slot, layer in enumerate(LAYERS):
        d = vec.direction(layer)
        assert math.isclose(float(d.norm()), 1.0, rel_tol=1e-5)
        assert float(d @ u[slot]) > 0.99
        assert math.isclose(vec.z_bar(layer), float((with_[:, slot] @ d).mean()), rel_tol=1e-4, abs_tol=1e-4)
        assert math.isclose(vec.z_bar_without(layer), float((without[:, slot] @ d).mean()), rel_tol=1e-4, abs_tol=1e-4)
        assert vec.z_bar(layer) - vec.z_bar_without(layer) == pytest.approx(SCALE * float(d @ u[slot]), rel=0.05)


def test_derive_on_tiny(tiny, tiny_acts, tiny_pairs):
    vec = wb.derive(tiny_acts)
    assert vec.layers == (0, 1, 2, 3) and vec.d_model == 64
    diff = (tiny_acts.with_instruction - tiny_acts.without_instruction).mean(0)
    for layer in vec.layers:
        d = vec.direction(layer)
        assert torch.allclose(d.norm(), torch.tensor(1.0), atol=1e-6)
        torch.testing.assert_close(d, diff[layer] / diff[layer].norm(), atol=1e-6, rtol=1e-5)
        z = float((tiny_acts.with_instruction[:, layer] @ d).mean())
        assert vec.z_bar(layer) == pytest.approx(z, rel=1e-5, abs=1e-5)
        z0 = float((tiny_acts.without_instruction[:, layer] @ d).mean())
        assert vec.z_bar_without(layer) == pytest.approx(z0, rel=1e-5, abs=1e-5)
        assert vec.norms[vec.layers.index(layer)] == pytest.approx(float(diff[layer].norm()), rel=1e-5)
    meta = vec.meta
    assert meta["model"] == "tiny-instruct" and meta["weight_hash"] == tiny.wb_info.weight_hash
    assert (meta["d_model"], meta["hook"], meta["position"], meta["method"]) == (64, "resid_post", "last", "mean_diff")
    assert meta["n_pairs"] == len(tiny_pairs) and meta["instruction_id"] == "change_case:english_lowercase"
    assert meta["format"] == wb.default_format(tiny).to_dict() and len(meta["data_hash"]) == 64


def test_derive_bad_input(tiny, tiny_pairs, tiny_acts):
    with pytest.raises(ValueError, match="unknown method 'lda'.*mean_diff"):
        wb.derive(tiny_acts, method="lda")
    full = wb.cache_pairs_all_positions(tiny, tiny_pairs[:2], layers=[1])
    with pytest.raises(ValueError, match="one activation per prompt"):
        wb.derive(full)
    one = wb.cache_pairs(tiny, tiny_pairs[:1], layers=[1])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        wb.derive(one, method="pca")
    assert wb.derive(one).layers == (1,)


def test_negation(tiny_vec):
    neg = -tiny_vec
    torch.testing.assert_close(neg.vectors, -tiny_vec.vectors)
    for layer in tiny_vec.layers:
        torch.testing.assert_close(neg.direction(layer), -tiny_vec.direction(layer))
        assert neg.z_bar(layer) == -tiny_vec.z_bar(layer)
        assert neg.z_bar_without(layer) == -tiny_vec.z_bar_without(layer)
    assert neg.meta["operations"] == ["-1 * v"] and "operations" not in tiny_vec.meta
    torch.testing.assert_close((-neg).vectors, tiny_vec.vectors)


def test_scaling(tiny_vec):
    for twice in (2 * tiny_vec, tiny_vec * 2):
        torch.testing.assert_close(twice.vectors, 2 * tiny_vec.vectors)
        for layer in tiny_vec.layers:
            torch.testing.assert_close(twice.direction(layer), tiny_vec.direction(layer))
            assert twice.vector(layer).norm() == pytest.approx(2.0, rel=1e-6)
            assert twice.z_bar(layer) == tiny_vec.z_bar(layer)  # a property of the direction
    half_neg = -0.5 * tiny_vec
    assert half_neg.z_bar(2) == -tiny_vec.z_bar(2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cannot scale"):
            tiny_vec * bad


def test_sum_of_compatible_vectors(tiny, tiny_vec, short_queries):
    pairs = wb.instruction_pairs(short_queries, "punctuation:no_comma", seed=0)
    other = wb.derive(wb.cache_pairs(tiny, pairs, batch_size=8))
    total = tiny_vec + other
    torch.testing.assert_close(total.vectors, tiny_vec.vectors + other.vectors)
    assert total.layers == tiny_vec.layers
    with pytest.raises(ValueError, match="z-bar is unknown"):
        total.z_bar(1)
    with pytest.raises(ValueError, match="z-bar is unknown"):
        wb.Steering(total, layer=1, mode="adjust")
    assert wb.Steering(total, layer=1, mode="add").weight == 1.0
    assert total.meta["operations"] == ["v + [punctuation:no_comma]"]


def test_sum_of_incompatible_vectors_is_refused(tiny, tiny_vec, tiny_pairs):
    fewer = wb.derive(wb.cache_pairs(tiny, tiny_pairs, layers=[1, 2], batch_size=8))
    with pytest.raises(ValueError, match="different layers"):
        tiny_vec + fewer
    other_model = wb.load_model("tiny-instruct", seed=1)
    foreign = wb.derive(wb.cache_pairs(other_model, tiny_pairs, batch_size=8))
    with pytest.raises(ValueError, match="different weight_hash"):
        tiny_vec + foreign
    attn = wb.derive(wb.cache_pairs(tiny, tiny_pairs, hook="attn_out", batch_size=8))
    with pytest.raises(ValueError, match="different hook"):
        tiny_vec + attn
    with pytest.raises(TypeError):
        tiny_vec + 1.0


def _same(a: wb.SteeringVector, b: wb.SteeringVector):
    for field in ("vectors", "z_bars", "z_bars_without", "norms"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.layers == b.layers


def test_save_load_roundtrip(tiny, tiny_vec, tmp_path):
    vec = -tiny_vec  # with an operation recorded in the metadata
    path = vec.save(tmp_path / "sub" / "lowercase")
    assert path == tmp_path / "sub" / "lowercase.safetensors" and path.is_file()
    sidecar = path.with_suffix(".json")
    assert sidecar.is_file()
    assert json.loads(sidecar.read_text()) == json.loads(json.dumps(vec.meta, default=str))
    loaded = wb.SteeringVector.load(path, model=tiny)
    _same(loaded, vec)
    assert loaded.meta == json.loads(json.dumps(vec.meta, default=str))
    assert loaded.meta["operations"] == ["-1 * v"] and loaded.meta["weight_hash"] == tiny.wb_info.weight_hash
    assert not list(path.parent.glob("*.tmp"))


def test_load_refuses_broken_files(tiny_vec, tmp_path):
    path = tiny_vec.save(tmp_path / "v.safetensors")
    data = path.read_bytes()
    with pytest.raises(FileNotFoundError):
        wb.SteeringVector.load(tmp_path / "missing.safetensors")
    for name, content in [
        ("truncated", data[: len(data) // 2]),
        ("header-only", data[:8]),
        ("garbage", b"\x00not a safetensors file" * 20),
    ]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(VectorFileError, match="not a readable workbench steering vector"):
            wb.SteeringVector.load(bad)
    from safetensors.torch import load_file, save_file

    plain = tmp_path / "plain.safetensors"  # a valid safetensors file, but not a vector
    save_file({"vectors": torch.zeros(2, 3)}, plain)
    with pytest.raises(ValueError, match="not a readable workbench steering vector"):
        wb.SteeringVector.load(plain)
    anonymous = tmp_path / "anonymous.safetensors"  # a vector's tensors without its provenance
    save_file(load_file(path), anonymous)
    with pytest.raises(ValueError, match="not a readable workbench steering vector"):
        wb.SteeringVector.load(anonymous)


def test_load_refuses_another_width(tiny, tmp_path, make_vector):
    narrow = make_vector(tiny, {1: torch.ones(32)})
    path = narrow.save(tmp_path / "narrow")
    with pytest.raises(ValueError, match="width 32.*d_model 64"):
        wb.SteeringVector.load(path, model=tiny)
    with pytest.raises(ValueError, match="width 32"):  # not even when asked to cross models
        wb.SteeringVector.load(path, model=tiny, allow_cross_model=True)
    assert wb.SteeringVector.load(path).d_model == 32  # without a model nothing is checked


@pytest.mark.slow
def test_load_refuses_a_bundled_model_of_another_width(tiny_vec, smollm, tmp_path):
    path = tiny_vec.save(tmp_path / "v")
    with pytest.raises(ValueError, match="width 64.*d_model 576"):
        wb.SteeringVector.load(path, model=smollm)


def test_load_refuses_another_model_of_the_same_width(tiny, tiny_base, tiny_vec, tmp_path):
    path = tiny_vec.save(tmp_path / "v")
    assert tiny_base.cfg.d_model == tiny_vec.d_model
    with pytest.raises(ValueError, match="derived on 'tiny-instruct'.*allow_cross_model=True") as err:
        wb.SteeringVector.load(path, model=tiny_base)
    assert not isinstance(err.value, VectorFileError)  # a mismatch, not a broken file
    seed1 = wb.load_model("tiny-instruct", seed=1)
    with pytest.raises(ValueError, match="allow_cross_model=True"):
        wb.SteeringVector.load(path, model=seed1)
    for model in (tiny_base, seed1):
        _same(wb.SteeringVector.load(path, model=model, allow_cross_model=True), tiny_vec)


def test_load_refuses_a_vector_with_layers_the_model_lacks(tiny, tmp_path, make_vector):
    deep = make_vector(tiny, {2: torch.ones(64), 9: torch.ones(64)})
    with pytest.raises(ValueError, match="layer 9.*only 4 layers"):
        wb.SteeringVector.load(deep.save(tmp_path / "deep"), model=tiny)


def test_vector_accessors(tiny_vec):
    with pytest.raises(ValueError, match="no layer 7.*\\[0, 1, 2, 3\\]"):
        tiny_vec.direction(7)
    replaced = dataclasses.replace(tiny_vec, vectors=tiny_vec.vectors * 3)
    torch.testing.assert_close(replaced.direction(1), tiny_vec.direction(1))


def test_non_finite_vectors_are_refused(tiny, make_vector, tmp_path):
    """A NaN direction would turn every steered token to NaN and every response empty."""
    for bad in (float("nan"), float("inf")):
        direction = torch.ones(64)
        direction[3] = bad
        with pytest.raises(ValueError, match=r"NaN or inf values \(layers \[1\]\).*Fix"):
            make_vector(tiny, {1: direction})
    vec = make_vector(tiny, {1: torch.ones(64), 2: -torch.ones(64)})
    with pytest.raises(ValueError, match="z_bars holds inf.*Fix"):
        dataclasses.replace(vec, z_bars=torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="norms holds inf"):
        dataclasses.replace(vec, norms=torch.tensor([-float("inf"), 1.0]))
    unknown = dataclasses.replace(vec, z_bars=torch.tensor([float("nan"), 1.0]))  # NaN: unknown
    with pytest.raises(ValueError, match="z-bar is unknown"):
        unknown.z_bar(1)
    assert unknown.z_bar(2) == 1.0

    changed = make_vector(tiny, {1: torch.ones(64)})
    changed.vectors[0, 0] = float("nan")  # in place, after construction: save checks again
    with pytest.raises(ValueError, match="NaN or inf"):
        changed.save(tmp_path / "changed")
    assert not list(tmp_path.iterdir())

    from safetensors.torch import save_file

    path = tmp_path / "nan.safetensors"  # a file written by other means
    tensors = dict(
        vectors=torch.full((1, 64), float("nan")),
        layers=torch.tensor([1]),
        z_bars=torch.zeros(1),
        z_bars_without=torch.zeros(1),
        norms=torch.ones(1),
    )
    save_file(tensors, path, metadata={"workbench": json.dumps(vec.meta)})
    with pytest.raises(VectorFileError, match="not a readable.*NaN or inf"):
        wb.SteeringVector.load(path)


def test_a_sum_saves_and_loads(tiny, tiny_vec, tmp_path):
    """The sum's three NaN tensors once were one tensor, which safetensors refused to save."""
    total = tiny_vec + 2 * tiny_vec
    loaded = wb.SteeringVector.load(total.save(tmp_path / "sum"), model=tiny)
    assert loaded == total and loaded.z_bars.isnan().all() and loaded.norms.isnan().all()
    view = dataclasses.replace(tiny_vec, z_bars_without=tiny_vec.z_bars)  # shared memory too
    assert wb.SteeringVector.load(view.save(tmp_path / "view")) == view


def test_dotted_names_are_saved_apart(tiny, tiny_vec, tmp_path):
    """ "x.v1" and "x.v2" once both went to x.safetensors; now ".safetensors" is appended."""
    one, two = tiny_vec.save(tmp_path / "x.v1"), (-tiny_vec).save(tmp_path / "x.v2")
    assert (one.name, two.name) == ("x.v1.safetensors", "x.v2.safetensors")
    assert json.loads((tmp_path / "x.v1.json").read_text())["method"] == "mean_diff"
    assert "operations" in json.loads((tmp_path / "x.v2.json").read_text())
    assert wb.SteeringVector.load(one) == tiny_vec
    assert wb.SteeringVector.load(tmp_path / "x.v2", model=tiny) == -tiny_vec  # the name saved
    assert tiny_vec.save(tmp_path / "y.safetensors").name == "y.safetensors"  # not doubled
    assert (tmp_path / "y.json").is_file()
    # the layout of older saves: "x.v1" was written to x.safetensors, and loads by that name
    tiny_vec.save(tmp_path / "x")
    assert wb.SteeringVector.load(tmp_path / "x.safetensors") == tiny_vec
    with pytest.raises(FileNotFoundError, match=r"x\.safetensors exists.*older workbench"):
        wb.SteeringVector.load(tmp_path / "x.v3")
    assert not list(tmp_path.glob("*.tmp"))


def test_equality_and_hashing(tiny, tiny_vec, tmp_path):
    same = dataclasses.replace(tiny_vec, vectors=tiny_vec.vectors.clone())
    assert tiny_vec == tiny_vec and tiny_vec == same  # noqa: PLR0124 (reflexive __eq__ is the point) and hash(tiny_vec) == hash(same)
    assert len({tiny_vec, same}) == 1
    assert tiny_vec != -tiny_vec and tiny_vec != 2 * tiny_vec and tiny_vec != "vector"
    assert tiny_vec != dataclasses.replace(tiny_vec, meta={**tiny_vec.meta, "model": "other"})
    assert tiny_vec + tiny_vec == tiny_vec + tiny_vec  # NaN z-bars are equal: both unknown
    assert wb.SteeringVector.load(tiny_vec.save(tmp_path / "v")) == tiny_vec  # meta as saved
    spec = wb.Steering(tiny_vec, layer=2, mode="adjust", weight=0.5, positions=(0, -1))
    again = wb.Steering(same, layer=2, mode="adjust", weight=0.5, positions=[0, -1])
    assert spec == again and hash(spec) == hash(again) and len({spec, again}) == 1
    assert spec != dataclasses.replace(again, weight=0.25)
    assert spec != dataclasses.replace(again, vector=-tiny_vec)


def test_carried_without_activations_has_an_unknown_z_bar(tiny_vec, tiny_acts):
    """With z-bar 0, mode "adjust" would silently ablate: unknown (NaN) makes it refuse."""
    pairs = [LayerPair(source=1, target=1), LayerPair(source=3, target=2)]
    bare = carry_directions(tiny_vec, pairs, z_from_source=False)
    assert bare.z_bars.isnan().all() and bare.z_bars_without.isnan().all()
    with pytest.raises(ValueError, match="z-bar is unknown.*mode='add'"):
        wb.Steering(bare, layer=1, mode="adjust")
    assert wb.Steering(bare, layer=2, mode="add").vector == bare
    torch.testing.assert_close(bare.direction(2), tiny_vec.direction(3))
    sourced = carry_directions(tiny_vec, pairs)
    assert sourced.z_bar(2) == pytest.approx(tiny_vec.z_bar(3))
    targeted = carry_directions(tiny_vec, pairs, target_acts=tiny_acts, z_from_source=False)
    assert targeted.z_bar(1) == pytest.approx(tiny_vec.z_bar(1), rel=1e-5)


def test_resume_never_deletes_saved_vectors(tiny, tiny_pairs, tmp_path):
    """jobs.vectors_for: another model's vector is an error; an unreadable file is moved aside."""
    from workbench.experiments.jobs import vectors_for
    from workbench.experiments.rundir import RunDir

    run = RunDir.open(tmp_path / "run", "test", {"n": 1}, model=tiny, data_hash="0")
    name = "change_case:english_lowercase"
    vec = vectors_for(run, tiny, name, tiny_pairs[:2])
    path = run.path / "vectors" / "change_case__english_lowercase.safetensors"
    assert vectors_for(run, tiny, name, tiny_pairs[:2]) == vec  # resumed: loaded

    dataclasses.replace(vec, meta={**vec.meta, "model": "another"}).save(path)
    foreign = path.read_bytes()
    with pytest.raises(ValueError, match=f"{path.name} holds a vector that does not fit.*another --out"):
        vectors_for(run, tiny, name, tiny_pairs[:2])
    assert path.read_bytes() == foreign

    path.write_bytes(foreign[: len(foreign) // 2])  # cut short by a kill
    assert vectors_for(run, tiny, name, tiny_pairs[:2]) == vec
    assert path.with_name(path.name + ".corrupt").read_bytes() == foreign[: len(foreign) // 2]
    assert wb.SteeringVector.load(path, model=tiny) == vec
