import lightning as L
import pytest
import torch
from helpers import quiet_trainer
from test_cli import PRETRAIN, RETRAIN, tiny

from one_shui.cli import OneShuiCLI
from one_shui.data import IdentityDataModule, SyntheticSpec
from one_shui.methods.meta_unlearn import MetaUnlearn


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pretrain and its retrain on the synthetic data: (folder, pretrain ckpt, retrain ckpt)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        OneShuiCLI(["fit", "--config", str(PRETRAIN), *tiny("pre")])
        best = "pre/checkpoints/best.ckpt"
        OneShuiCLI(["fit", "--config", str(RETRAIN), *tiny("re"), "--data.init_args.split_file", best])
    return root, root / best, root / "re/checkpoints/best.ckpt"


def meta_data(root, **options) -> IdentityDataModule:
    return IdentityDataModule(
        "celebahq",
        str(root / "data/synthetic"),
        request_size=3,
        synthetic=SyntheticSpec(identities=40),
        image_size=32,
        batch_size=16,
        split_file=str(root / "pre/checkpoints/best.ckpt"),
        cache_dir=str(root / "cache"),
        **options,
    )


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
    trainer().fit(method, datamodule=meta_data(root, train_pool="simulated"))
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
    before = {k: v.clone() for k, v in method.model.model.named_parameters()}
    method.forget(support)
    moved = {k for k, v in method.model.model.named_parameters() if not torch.equal(before[k], v)}
    assert moved == set(before) - unchanged


def test_last_blocks_update_touches_only_the_last_blocks_norm_and_head(runs):
    method = MetaUnlearn(str(runs[1]), hidden=32, update="last_blocks", last_blocks=1)
    last = len(method.model.model.blocks) - 1
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
    method = MetaUnlearn(str(pretrain), str(retrain), hidden=32)
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    trainer().test(method, datamodule=meta_data(root), verbose=False)
    assert any(not torch.equal(before[k], v) for k, v in method.model.state_dict().items())
    results = method.results
    assert 0 <= results["tow"] <= 100 and 0 <= results["mia_auc"] <= 1
    assert results["reads"] == "support"
