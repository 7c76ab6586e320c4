import os

import lightning as L
import pytest
import torch
from helpers import CONFIGS, META_UNLEARN, meta_data, method_args, on_data, opened_files, quiet_trainer
from torchmetrics.functional.classification import multilabel_average_precision

from one_shui.checkpoints import load_checkpoint
from one_shui.cli import OneShuiCLI
from one_shui.methods.base import MethodSetupError
from one_shui.methods.loading import load_prepared
from one_shui.methods.meta_unlearn import MetaUnlearn


def trainer() -> L.Trainer:
    return quiet_trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        enable_checkpointing=False,
        reload_dataloaders_every_n_epochs=1,
    )


def test_meta_training_trains_the_meta_loss_and_leaves_the_backbone_alone(runs):
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32)
    original = {k: v.clone() for k, v in method.model.state_dict().items()}
    phi = {k: v.clone() for k, v in method.meta_loss.state_dict().items()}
    trainer().fit(method, datamodule=meta_data(root, method))
    assert all(torch.equal(original[k], v) for k, v in method.model.state_dict().items())
    grads = [p.grad for p in method.meta_loss.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert any(not torch.equal(phi[k], v) for k, v in method.meta_loss.state_dict().items())


@pytest.mark.parametrize(("update", "unchanged"), [("all", set()), ("published", {"cls_token", "pos_embed"})])
def test_forget_changes_the_model_from_the_support_batch_only(runs, update, unchanged):
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32, update=update)
    data = meta_data(root)
    support = next(iter(data.loader("support", batch_size=3)))
    before = {k: v.clone() for k, v in method.model.network.named_parameters()}
    method.forget(support)
    moved = {k for k, v in method.model.network.named_parameters() if not torch.equal(before[k], v)}
    assert moved == set(before) - unchanged


def test_without_the_outputs_part_the_head_gets_no_step_and_the_rest_of_the_model_does(runs):
    """The ablation "without outputs": M reads the pooled feature, not the head's logits; the meta-training
    step and the serving step run, and leave the head as it was."""
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32, parts=["features", "targets", "identity"])
    trainer().fit(method, datamodule=meta_data(root, method))
    before = {k: v.clone() for k, v in method.model.network.named_parameters()}
    method.forget(next(iter(meta_data(root).loader("support", batch_size=3))))
    moved = {k for k, v in method.model.network.named_parameters() if not torch.equal(before[k], v)}
    assert moved == {k for k in before if not k.startswith("head.")}


def test_last_blocks_update_touches_only_the_last_blocks_norm_and_head(runs):
    method = MetaUnlearn(str(runs[1]), hidden=32, update="last_blocks", last_blocks=1)
    last = len(method.model.network.blocks) - 1
    assert method.updated and all(n.startswith((f"blocks.{last}.", "norm.", "head.")) for n in method.updated)
    with pytest.raises(ValueError, match="at least 99 blocks"):
        MetaUnlearn(str(runs[1]), update="last_blocks", last_blocks=99)


def test_second_order_step_needs_the_math_attention_kernel(runs):
    """Double backward through the fused SDPA kernel is what the meta step must avoid."""
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    w = torch.randn(8, requires_grad=True)

    def second_order():
        out = torch.nn.functional.scaled_dot_product_attention(q * w, q, q)
        (g,) = torch.autograd.grad(out.sum(), w, create_graph=True)
        g.pow(2).sum().backward()

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        second_order()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), pytest.raises(RuntimeError):
        second_order()


def test_test_forgets_then_evaluates_with_tow_against_the_retrained_model(runs):
    root, pretrain, retrain = runs
    method = MetaUnlearn(str(pretrain), retrain_ckpt=str(retrain), hidden=32)
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    trainer().test(method, datamodule=meta_data(root), verbose=False)
    assert any(not torch.equal(before[k], v) for k, v in method.model.state_dict().items())
    results = method.results
    assert 0 <= results["tow"] <= 100 and 0 <= results["mia_auc"] <= 1
    assert results["reads"] == "support"


def test_the_prepared_method_is_meta_unlearn_through_the_cli_and_tests_from_its_checkpoint(prepared, runs):
    root, pretrain, _ = runs
    checkpoint = load_checkpoint(prepared)
    assert checkpoint["one_shui"]["method"] == "one_shui.methods.meta_unlearn.MetaUnlearn"
    assert (
        checkpoint["one_shui"]["backbone"] == "vit_cpu"
    )  # the original's own hyperparameters, under the CLI
    assert not any(key.startswith("model.") for key in checkpoint["state_dict"])  # in its pretrain file
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli = OneShuiCLI(
            ["test", *on_data(META_UNLEARN), *method_args(root, "mu"), f"--ckpt_path={prepared}"]
        )
    restored = load_prepared(prepared)
    assert all(
        torch.equal(v, cli.model.meta_loss.state_dict()[k])
        for k, v in restored.meta_loss.state_dict().items()
    )
    assert 0 <= cli.model.results["tow"] <= 100 and cli.model.results["reads"] == "support"


def test_a_test_of_a_prepared_method_opens_the_original_model_once(prepared, runs):
    root, pretrain, _ = runs
    with pytest.MonkeyPatch.context() as patch, opened_files() as opened:
        patch.chdir(root)
        OneShuiCLI(["test", *on_data(META_UNLEARN), *method_args(root, "mu"), f"--ckpt_path={prepared}"])
    assert opened.count(os.path.realpath(pretrain)) == 1


def test_a_test_keeps_its_own_run_options_over_those_the_method_was_prepared_with(prepared, runs):
    """Lightning puts a checkpoint's options over the command line's: not the options of a run (which
    retrain, which MIA), or a test against another retrain would silently score against the first."""
    root, pretrain, _ = runs
    run = ["--model.init_args.mia=published", f"--model.init_args.retrain_ckpt={pretrain}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli = OneShuiCLI(
            ["test", *on_data(META_UNLEARN), *method_args(root, "mu"), *run, f"--ckpt_path={prepared}"]
        )
    hparams = cli.model.hparams
    assert (hparams.mia, hparams.retrain_ckpt) == ("published", str(pretrain))
    assert hparams.hidden == 32  # what the preparation was fitted with, from its checkpoint


def test_no_unlearning_is_the_pretrain_row_and_the_retrained_model_scores_tow_100(runs):
    root, _, retrain = runs
    config = on_data(CONFIGS / "methods" / "no_unlearning.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        original = OneShuiCLI(["test", *config, *method_args(root, "none")]).model
        gold = OneShuiCLI(
            [
                "test",
                *config,
                *method_args(root, "gold"),
                f"--model.init_args.pretrain_ckpt={retrain}",
            ]
        )
    assert original.results["tow"] < 100
    assert gold.model.results["tow"] == pytest.approx(100)


def test_meta_training_reads_the_simulated_requests_it_declares(runs, monkeypatch):
    """The CLI builds the data with the pool the method declares: whatever the data config says, fit reads
    requests. Data built otherwise is refused by name, not rewritten."""
    root, pretrain, _ = runs
    monkeypatch.chdir(root)
    args = [*on_data(META_UNLEARN), *method_args(root, "declared"), "--data.init_args.train_pool=train"]
    data = OneShuiCLI(args, run=False).datamodule
    assert data.hparams.train_pool == "simulated"
    assert data.train_dataloader().dataset.requests  # RequestBatch items, one per simulated request
    data = meta_data(root, train_pool="train")
    with pytest.raises(MethodSetupError, match="reads data.init_args.train_pool=simulated"):
        trainer().fit(MetaUnlearn(str(pretrain), hidden=32), datamodule=data)
    assert data.hparams.train_pool == "train"


def test_no_checkpoint_is_written_when_the_trainer_has_checkpointing_off(runs, tmp_path, monkeypatch):
    root, pretrain, _ = runs
    monkeypatch.chdir(tmp_path)
    method = MetaUnlearn(str(pretrain), hidden=32)
    trainer().fit(method, datamodule=meta_data(root, method))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_second_fit_into_the_same_run_replaces_the_prepared_method(runs, monkeypatch):
    root = runs[0]
    monkeypatch.chdir(root)
    for meta_lr in ("0.5", "0.25"):
        args = [
            *method_args(root, "twice"),
            "--model.init_args.hidden=32",
            f"--model.init_args.meta_lr={meta_lr}",
        ]
        OneShuiCLI(["fit", *on_data(META_UNLEARN), *args])
    assert sorted(p.name for p in (root / "twice/checkpoints").iterdir()) == ["last.ckpt", "split.json"]
    assert load_checkpoint(root / "twice/checkpoints/last.ckpt")["hyper_parameters"]["meta_lr"] == 0.25


def test_the_objective_variants_are_the_terms_of_the_full_objective(runs):
    root, pretrain, _ = runs
    data = meta_data(root)
    request = next(iter(data.simulated_request_loader(0)))
    validation = list(data.loader("val", batch_size=8))
    method = MetaUnlearn(str(pretrain), hidden=32, unlearning_batch_size=8)
    method.meta_loss.eval()  # no dropout: the same h_phi for every variant

    def objective(**options) -> float:
        method.hparams.update(
            {"objective": "full", "distance": "smooth_l1", "accuracy_scaling": True, **options}
        )
        torch.manual_seed(0)  # the same forget batches for every variant
        return float(method.meta_objective(request, iter(validation)))

    full, original, unlearned = objective(), objective(objective="original"), objective(objective="unlearned")
    assert full == pytest.approx(original + unlearned, rel=1e-5)
    assert original != pytest.approx(unlearned)
    assert len({round(objective(distance=d), 6) for d in ("smooth_l1", "mse", "l1")}) == 3
    assert objective(accuracy_scaling=False) != pytest.approx(full)
    assert objective(objective="rev") not in (pytest.approx(full), pytest.approx(unlearned))


def scaled_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE times (1 - macro mAP of the batch), the mAP over the attributes with a positive (torchmetrics)."""
    present = targets.bool().any(0)
    ap = multilabel_average_precision(
        logits[:, present], targets[:, present].long(), num_labels=int(present.sum()), average=None
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return bce * (1 - ap.mean())


def test_the_meta_objective_pairs_forget_batches_with_val_batches_and_weighs_them_by_size(runs):
    """§4/§8 by hand: the forget set shuffled into batches of 64 (here 4), each against its own VAL
    batch, each loss scaled by (1 - the batch's macro mAP), the distances averaged weighted by size."""
    root, pretrain, _ = runs
    data = meta_data(root)
    request = next(iter(data.simulated_request_loader(0)))
    size = len(request.forget[0])
    assert size % 4, "the request must leave a short last batch"
    validation = list(data.loader("val", batch_size=4))[: -(-size // 4)]
    method = MetaUnlearn(str(pretrain), hidden=32, unlearning_batch_size=4, objective="full", distance="mse")
    method.meta_loss.eval()
    torch.manual_seed(7)
    objective = method.meta_objective(request, iter(validation))

    torch.manual_seed(7)
    order = torch.randperm(size)
    params = method._leaves()
    unlearned = method._unlearning_step(params, request.support, create_graph=False)
    net = method.model.network

    def logits(weights, images):
        return torch.func.functional_call(net, weights, (images,))

    expected, seen = 0.0, 0
    for start, (val_images, _, val_targets) in zip(range(0, size, 4), validation, strict=True):
        rows = order[start : start + 4]
        forget = scaled_loss(logits(unlearned, request.forget[0][rows]), request.forget[2][rows])
        original = scaled_loss(logits(params, val_images), val_targets)
        after = scaled_loss(logits(unlearned, val_images), val_targets)
        pair = (forget - original) ** 2 + (forget - after) ** 2
        expected, seen = expected + len(rows) * float(pair), seen + len(rows)
    assert seen == size
    assert float(objective) == pytest.approx(expected / size, rel=1e-4)


def test_every_simulated_request_starts_a_fresh_shuffled_pass_over_val(runs, monkeypatch):
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32, unlearning_batch_size=4)
    data = meta_data(root, method)
    firsts = []
    original = MetaUnlearn.meta_objective

    def record(self, request, validation):
        firsts.append(next(validation)[1].tolist())
        return original(self, request, validation)

    monkeypatch.setattr(MetaUnlearn, "meta_objective", record)
    trainer().fit(method, datamodule=data)
    loader = method._validation
    assert loader.batch_size == 4 and isinstance(loader.sampler, torch.utils.data.RandomSampler)
    assert len(firsts) == 2 and firsts[0] != firsts[1]  # a new pass, reshuffled, per request


def test_the_unlearning_step_runs_in_float32_under_mixed_precision(runs):
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32)
    method.meta_loss.eval()
    support = next(iter(meta_data(root).loader("support")))
    plain = method._unlearning_step(method._leaves(), support, create_graph=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method._unlearning_step(method._leaves(), support, create_graph=False)
    assert all(mixed[name].dtype == torch.float32 for name in plain)
    assert all(torch.equal(plain[name], mixed[name]) for name in plain)


def test_several_serving_steps_are_steps_one_after_another(runs):
    root, pretrain, _ = runs
    support = next(iter(meta_data(root).loader("support")))
    twice = MetaUnlearn(str(pretrain), hidden=32, forget_steps=2)
    once = MetaUnlearn(str(pretrain), hidden=32)
    once.meta_loss.load_state_dict(twice.meta_loss.state_dict())
    twice.forget(support)
    once.forget(support)
    after_one = {k: v.clone() for k, v in once.model.state_dict().items()}
    once.forget(support)
    assert all(
        torch.allclose(v, twice.model.state_dict()[k], atol=1e-6) for k, v in once.model.state_dict().items()
    )
    assert any(not torch.equal(v, after_one[k]) for k, v in once.model.state_dict().items())


def test_forget_takes_the_inner_step_that_meta_training_optimised(runs):
    """Serving works on the module's weights, meta-training functionally: the two steps must agree."""
    root, pretrain, _ = runs
    method = MetaUnlearn(str(pretrain), hidden=32)
    method.meta_loss.eval()
    support = next(iter(meta_data(root).loader("support")))
    inner = method._unlearning_step(method._leaves(), support, create_graph=False)
    method.forget(support)
    weights = dict(method.model.network.named_parameters())
    assert all(torch.allclose(weights[name], value, atol=1e-6) for name, value in inner.items())
    assert not any(weight.requires_grad for weight in weights.values())


def test_testing_a_method_that_was_never_prepared_warns(runs, prepared):
    root, pretrain, _ = runs
    with pytest.warns(UserWarning, match="without its preparation"):
        trainer().test(MetaUnlearn(str(pretrain), hidden=32), datamodule=meta_data(root), verbose=False)
    restored = load_prepared(prepared)
    assert restored._prepared
