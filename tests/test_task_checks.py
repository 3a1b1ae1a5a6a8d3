"""Every task's ``check_config``: the shipped configs pass, bad values are refused with the key named,
and the check reads no data (the multirun pre-flight runs it for every grid point before any job)."""

import time
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import bench.app
from bench.errors import ConfigError
from tasks.base import Task
from tasks.vision_data import CIFAR_FILES, CIFAR_FOLDERS

TASKS = sorted(p.stem for p in (Path(bench.app.CONF_DIR) / "task").glob("*.yaml"))
VISION = ("cifar10_resnet", "cifar100_resnet", "cifar10_vit", "imagenet_resnet50")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Empty stand-in files at the paths the vision tasks expect: enough for a check that only stats them."""
    root = tmp_path_factory.mktemp("data")
    for dataset, folder in CIFAR_FOLDERS.items():
        (root / folder).mkdir()
        for name in CIFAR_FILES[dataset]:
            (root / folder / name).touch()
    for split in ("train", "val"):
        (root / "imagenet" / split / "class0").mkdir(parents=True)
    return root


def task_node(name: str, *overrides: str, data_root: Path | None = None) -> DictConfig:
    """The composed ``task`` node as the CLI builds it; vision tasks point at ``data_root``."""
    extra = []
    if data_root is not None and name in VISION:
        extra = [f"task.data_root={data_root / 'imagenet' if name.startswith('imagenet') else data_root}"]
    with initialize_config_dir(config_dir=bench.app.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"task={name}", *extra, *overrides]).task


def task_class(cfg: DictConfig) -> type[Task]:
    return hydra.utils.get_class(cfg._target_)


@pytest.mark.parametrize("name", TASKS)
def test_shipped_config_passes(name, data_root):
    cfg = task_node(name, data_root=data_root)
    task_class(cfg).check_config(cfg)


# (task, overrides, text the one-line message must hold: the key and the value as given)
BAD = [
    ("fashion_mnist", ["task.norm=layer"], "task.norm='layer'"),
    ("fashion_mnist", ["task.channels=[16,0]"], "task.channels=[16, 0]"),
    ("fashion_mnist", ["task.blocks=0"], "task.blocks=0"),
    ("fashion_mnist", ["task.decay_norm_bias=maybe"], "task.decay_norm_bias='maybe'"),
    ("digits", ["task.hidden=-1"], "task.hidden=-1"),
    ("digits", ["task.hidden=1.5"], "task.hidden=1.5"),
    ("digits", ["task.channels=[32]"], "task.channels=[32]"),
    ("digits", ["task.channels=[32,-4]"], "task.channels=[32, -4]"),
    ("digits", ["task.val_fraction=1.5"], "task.val_fraction=1.5"),
    ("digits", ["task.val_fraction=0.0001"], "task.val_fraction=0.0001 is not allowed: a fraction that leaves images in both splits"),
    ("digits", ["task.split_seed=abc"], "task.split_seed='abc'"),
    ("digits", ["task.norm=layer"], "task.norm='layer' is not allowed: one of none, batch"),
    ("digits", ["task.norm=null"], "task.norm=None"),
    ("gan_ring", ["task.hidden=-1"], "task.hidden=-1"),
    ("gan_ring", ["task.layers=0"], "task.layers=0"),
    ("gan_ring", ["task.z_dim=2.5"], "task.z_dim=2.5"),
    ("gan_ring", ["task.sigma=0"], "task.sigma=0"),
    ("gan_ring", ["task.scale=far"], "task.scale='far'"),
    ("gan_ring", ["task.min_mode_share=1.5"], "task.min_mode_share=1.5"),
    ("gan_ring", ["task.collapse_coverage=-0.1"], "task.collapse_coverage=-0.1"),
    ("gan_ring", ["task.warmup_on=critic"], "task.warmup_on='critic'"),
    ("gan_ring", ["task.lr_mult.generator=0"], "task.lr_mult.generator=0"),
    ("gan_ring", ["task.eval_samples=1"], "task.eval_samples=1"),
    ("gan_ring", ["task.modes=0"], "task.modes=0"),
    ("dcgan_digits", ["task.width=-1"], "task.width=-1"),
    ("dcgan_digits", ["task.image_size=12"], "task.image_size=12"),
    ("dcgan_digits", ["task.min_class_share=2"], "task.min_class_share=2"),
    ("dcgan_digits", ["task.collapse_entropy=3"], "task.collapse_entropy=3"),
    ("dcgan_digits", ["task.classifier.hidden=-1"], "task.classifier.hidden=-1"),
    ("dcgan_digits", ["task.classifier.lr=0"], "task.classifier.lr=0"),
    ("dcgan_digits", ["task.samples_file=7"], "task.samples_file=7"),
    ("dcgan_digits", ["task.samples_file=/tmp/samples.pt"], "task.samples_file='/tmp/samples.pt' is not allowed: a file name relative to the job's output directory"),
    ("gan_ring", ["task.samples_file=../other_job/samples.pt"], "task.samples_file='../other_job/samples.pt'"),
    ("dcgan_digits", ["task.classifier.cache_dir=/home/someone/models"], "task.classifier.cache_dir='/home/someone/models' is not allowed: a folder name under the cache root"),
    ("dcgan_digits", ["task.classifier.cache_dir='~/elsewhere'"], "task.classifier.cache_dir='~/elsewhere'"),
    ("lm_postln", ["task.tokenizer.kind=bpe", "task.tokenizer.vocab_size=500", "task.tokenizer.cache_dir=a/../../b"], "task.tokenizer.cache_dir='a/../../b'"),
    ("lm_postln", ["task.width=-1"], "task.width=-1"),
    ("lm_postln", ["task.heads=3"], "task.heads=3 is not allowed: a divisor of task.width=64"),
    ("lm_postln", ["task.dropout=1.0"], "task.dropout=1.0"),
    ("lm_postln", ["task.context_length=1"], "task.context_length=1"),
    ("lm_postln", ["task.norm=middle"], "task.norm='middle'"),
    ("lm_postln", ["task.corpus.val_fraction=0"], "task.corpus.val_fraction=0"),
    ("lm_postln", ["task.corpus.test_fraction=0.9"], "task.corpus.test_fraction=0.9 is not allowed: a fraction that leaves training text"),
    ("lm_postln", ["task.corpus.pieces=2"], "task.corpus.pieces=2"),
    ("lm_postln", ["task.corpus.split_seed=-1"], "task.corpus.split_seed=-1"),
    ("lm_postln", ["task.corpus.source=web"], "task.corpus.source='web'"),
    ("lm_postln", ["task.corpus.source=text"], "task.corpus.path=None"),
    ("lm_postln", ["task.corpus.source=text", "task.corpus.path=/nonexistent/corpus.txt"], "task.corpus.path='/nonexistent/corpus.txt'"),
    ("lm_postln", ["task.corpus.source=dataset", "task.corpus.path=/nonexistent/ds"], "task.corpus.path='/nonexistent/ds'"),
    ("lm_postln", ["task.tokenizer.kind=bpe", "task.tokenizer.vocab_size=200"], "task.tokenizer.vocab_size=200"),
    ("lm_postln", ["task.tokenizer.kind=bpe", "task.tokenizer.vocab_size=500", "task.tokenizer.min_frequency=0"], "task.tokenizer.min_frequency=0"),
    ("lm_preln", ["task.depth=0"], "task.depth=0"),
    ("gpt2_lm", ["task.norm=post"], "task.norm='post' is not allowed: 'pre' only"),
    ("gpt2_lm", ["task.ffn_mult=0"], "task.ffn_mult=0"),
    ("bert_mlm", ["task.mask_prob=1.5"], "task.mask_prob=1.5"),
    ("bert_mlm", ["task.norm=pre"], "task.norm='pre' is not allowed: 'post' only"),
    ("cifar10_resnet", ["task.crop_padding=-1"], "task.crop_padding=-1"),
    ("cifar10_resnet", ["task.workers=-1"], "task.workers=-1"),
    ("cifar10_resnet", ["task.loader=gpu"], "task.loader='gpu'"),
    ("cifar10_resnet", ["task.dataset=svhn"], "task.dataset='svhn'"),
    ("cifar10_resnet", ["task.model=resnet_nope"], "task.model='resnet_nope'"),
    ("cifar10_resnet", ["+task.model_kwargs.num_classes=7"], "task.model_kwargs.num_classes=7"),
    ("cifar10_resnet", ["task.cifar_stem=maybe"], "task.cifar_stem='maybe'"),
    ("cifar10_resnet", ["task.label_smoothing=1.5"], "task.label_smoothing=1.5"),
    ("cifar10_resnet", ["task.train_subset=0"], "task.train_subset=0"),
    ("cifar10_resnet", ["task.val_size=0"], "task.val_size=0"),
    ("cifar10_vit", ["task.val_subset=6000"], "task.val_subset=6000 is not allowed: at most task.val_size=5000"),
    ("cifar100_resnet", ["task.split_seed=-1"], "task.split_seed=-1"),
    ("imagenet_resnet50", ["task.val_size=1.5"], "task.val_size=1.5"),
    ("cifar100_resnet", ["task.std=[0.2,0.2,0]"], "task.std=[0.2, 0.2, 0]"),
    ("cifar10_vit", ["task.mean=[0.5,0.5]"], "task.mean=[0.5, 0.5]"),
    ("imagenet_resnet50", ["task.image_size=-1"], "task.image_size=-1"),
    ("imagenet_resnet50", ["task.val_resize=200"], "task.val_resize=200 is not allowed: an integer >= 224"),
    ("imagenet_resnet50", ["task.min_scale=0"], "task.min_scale=0"),
    ("imagenet_resnet50", ["task.eval_batch_size=0"], "task.eval_batch_size=0"),
    ("nqm", ["task.dim=0"], "task.dim=0"),
    ("nqm", ["task.h_max=-1"], "task.h_max=-1"),
    ("nqm", ["task.spectrum=[1.0,0]"], "task.spectrum=[1.0, 0] is not allowed: null or a non-empty list of curvatures > 0"),
    ("nqm", ["task.spectrum=[]"], "task.spectrum=[]"),
    ("nqm", ["task.noise=-0.5"], "task.noise=-0.5"),
    ("nqm", ["task.init_scale=0"], "task.init_scale=0"),
    ("nqm", ["task.epoch_size=1.5"], "task.epoch_size=1.5"),
]


@pytest.mark.parametrize("name,overrides,needle", BAD, ids=[f"{t}:{' '.join(o)}" for t, o, _ in BAD])
def test_bad_value_is_refused_naming_the_key(name, overrides, needle, data_root):
    cfg = task_node(name, *overrides, data_root=data_root)
    with pytest.raises(ConfigError) as err:
        task_class(cfg).check_config(cfg)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg


def test_every_task_class_has_bad_cases():
    family = {t: task_class(task_node(t)).__name__ for t in TASKS}
    covered = [family[t] for t, _, _ in BAD]
    assert all(covered.count(f) >= 2 for f in family.values()), {f: covered.count(f) for f in family.values()}


@pytest.mark.parametrize(
    "name,needle",
    [
        ("cifar10_resnet", "no folder /nonexistent/cifar-10-batches-py/"),
        ("cifar100_resnet", "no folder /nonexistent/cifar-100-python/"),
        ("imagenet_resnet50", "expected /nonexistent/train/<class>/<image>"),
        ("fashion_mnist", "Fashion-MNIST not found (task.data_root='/nonexistent' lacks them)"),
    ],
)
def test_missing_data_is_refused_before_launch(name, needle):
    cfg = task_node(name, "task.data_root=/nonexistent")
    with pytest.raises(ConfigError, match="task.data_root='/nonexistent'") as err:
        task_class(cfg).check_config(cfg)
    assert needle in str(err.value)


def test_check_loads_no_data_and_is_fast(data_root, monkeypatch):
    """No loader runs (each one is replaced by a trap), and all twelve checks together take well under 2 s."""
    import sklearn.datasets

    import tasks.digits
    import tasks.gan
    import tasks.text
    import tasks.vision_data

    def trap(*args, **kwargs):
        raise AssertionError("check_config loaded data")

    for module, name in [
        (tasks.vision_data, "load_cifar"), (tasks.vision_data, "load_imagefolder"), (tasks.vision_data, "cifar_files_official"),
        (tasks.digits, "load_digits_split"), (tasks.gan, "load_digits_split"), (tasks.gan, "load_or_train_classifier"),
        (tasks.text, "load_corpus"), (tasks.text, "pydoc_text"), (tasks.text, "train_bpe"), (sklearn.datasets, "load_digits"),
        (torch, "load"), (torch, "save"),
    ]:
        monkeypatch.setattr(module, name, trap)
    nodes = [task_node(t, data_root=data_root) for t in TASKS]
    classes = [task_class(c) for c in nodes]  # imports the task modules outside the timed part
    start = time.perf_counter()
    for cls, cfg in zip(classes, nodes):
        cls.check_config(cfg)
    elapsed = time.perf_counter() - start
    print(f"check_config of {len(TASKS)} tasks: {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0, f"checking {len(TASKS)} tasks took {elapsed:.2f} s"


def test_only_gan_tasks_declare_outcomes():
    for t in TASKS:
        cls = task_class(task_node(t))
        expected = {"collapsed": False} if t in ("gan_ring", "dcgan_digits") else {}
        assert dict(cls.outcomes) == expected, t


def test_collapsed_is_a_declared_outcome():
    cfg = task_node("gan_ring", "task.samples_file=null")
    task = task_class(cfg)(cfg, 0, torch.device("cpu"))
    assert task.final_status({"modes": 3.0}) == "collapsed" and "collapsed" in task.outcomes  # 3 < 0.5 x 8 modes
    assert task.final_status({"modes": 4.0}) is None


def test_constructor_refuses_a_bad_value_before_loading_data(monkeypatch):
    """A task built directly (tests, scripts) is checked too, and before its data is read."""
    import tasks.digits

    monkeypatch.setattr(tasks.digits, "load_digits_split", lambda *a: pytest.fail("data loaded before the check"))
    cfg = task_node("digits", "task.hidden=-1")
    with pytest.raises(ConfigError, match=r"task\.hidden=-1"):
        task_class(cfg)(cfg, 0, torch.device("cpu"))
