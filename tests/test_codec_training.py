"""The codec family: DAC trained with DAC's recipe (discodiff.training.codec_task) on rendered-like stems.

Runs use the tiny codec (configs/codec/tiny.yaml) on a tiny rendered tree written here: nested track folders with
short synthetic stems and metadata.json naming real Bach pieces of both splits. Subprocess runs read it through
:class:`CrashingStemClips` (``test_codec_training:CrashingStemClips``, this folder on ``PYTHONPATH``), which exits
hard once a given checkpoint exists — a crash at a known step, without a race. This file is also the script each
rank of the DDP test runs (``__main__`` at the bottom).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from discodiff.training.codec_data import StemClips
from test_training import REPO, TRAIN_SCRIPT, free_port, subprocess_env, tensor_digest, train_losses

pytest.importorskip("dac")

CODEC_TINY = REPO / "configs" / "codec" / "tiny.yaml"
TRAIN_CONFIG = REPO / "configs" / "train" / "codec_tiny.yaml"
EXPORT_SCRIPT = REPO / "train" / "export.py"
SAMPLE_RATE = 44100
CRASH_AFTER, CRASH_STATUS = "CODEC_TEST_CRASH_AFTER", 3  # environment: exit hard once this directory exists
runner = CliRunner()


class CrashingStemClips(StemClips):
    """:class:`StemClips` that exits the process (no cleanup, like kill -9) on the first item read once the directory
    in ``$CODEC_TEST_CRASH_AFTER`` exists."""

    def __getitem__(self, index: int) -> dict:
        marker = os.environ.get(CRASH_AFTER)
        if marker and Path(marker).is_dir():
            os._exit(CRASH_STATUS)
        return super().__getitem__(index)


def pieces(split: str, count: int) -> list[str]:
    recorded = json.loads((REPO / "discodiff" / "corpus" / "bach_split.json").read_text())["split"]
    return sorted(piece for piece, value in recorded.items() if value == split)[:count]


def write_track(folder: Path, piece: str | None, seed: int, seconds: float = 0.5) -> Path:
    """A rendered-like track folder: float32 mono stems at 44.1 kHz (a vocal that starts after a rest, a chord) and
    metadata.json naming ``piece`` (none when ``piece`` is None)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    vocals = 0.3 * np.sin(2 * np.pi * (330 + 20 * seed) * t) * (t > 0.1)
    accompaniment = sum(0.15 * np.sin(2 * np.pi * f * (1 + 0.05 * seed) * t) for f in (110.0, 164.8, 220.0))
    accompaniment = accompaniment + 0.01 * rng.standard_normal(t.size)
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in (("vocals", vocals), ("accompaniment", accompaniment), ("mixture", vocals + accompaniment)):
        sf.write(str(folder / f"{name}.wav"), audio.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    if piece is not None:
        metadata = {"track_id": folder.name, "piece": piece, "seed": seed, "sample_rate": SAMPLE_RATE}
        (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def write_rendered_tree(root: Path) -> Path:
    """``seed0/`` with three train-split and two validation-split tracks, ``seed1/`` with one of each."""
    train, validation = pieces("train", 4), pieces("validation", 3)
    for i, piece in enumerate(train[:3]):
        write_track(root / "seed0" / piece.replace("/", "-"), piece, seed=i)
    for i, piece in enumerate(validation[:2]):
        write_track(root / "seed0" / piece.replace("/", "-"), piece, seed=10 + i)
    write_track(root / "seed1" / train[3].replace("/", "-"), train[3], seed=20)
    write_track(root / "seed1" / validation[2].replace("/", "-"), validation[2], seed=21)
    return root


def split_of_track(root: Path, track_id: str) -> str:
    from discodiff.corpus.splits import split_of

    return split_of(json.loads((root / track_id / "metadata.json").read_text())["piece"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_rendered_tree(tmp_path_factory.mktemp("rendered"))


# --- losses and the model --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:stft_data changed shape")
def test_per_sample_losses_average_to_the_stock_losses():
    """The per-sample mel and waveform losses' batch means equal dac's stock losses (reduction over the batch)."""
    from audiotools import AudioSignal
    from dac.nn.loss import L1Loss

    from discodiff.training.codec_task import MelLossSection, PerSampleL1, mel_loss

    generator = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(3, 1, 4096, generator=generator)
    y = x + 0.1 * torch.randn(3, 1, 4096, generator=generator)
    settings = MelLossSection()

    def signals():
        return AudioSignal(x.clone(), SAMPLE_RATE), AudioSignal(y.clone(), SAMPLE_RATE)

    per_sample = mel_loss(settings, PerSampleL1())(*signals())
    stock = mel_loss(settings)(*signals())
    assert per_sample.shape == (3,) and per_sample.min() > 0
    torch.testing.assert_close(per_sample.mean(), stock, rtol=1e-5, atol=0)
    assert len({round(v, 4) for v in per_sample.tolist()}) == 3, "each sample its own value"
    torch.testing.assert_close(PerSampleL1()(*signals()).mean(), L1Loss()(*signals()), rtol=1e-6, atol=0)
    first = mel_loss(settings, PerSampleL1())(AudioSignal(x[:1].clone(), SAMPLE_RATE), AudioSignal(y[:1].clone(), SAMPLE_RATE))
    torch.testing.assert_close(first, per_sample[:1], rtol=1e-5, atol=0)


def test_autoencoder_is_the_dac_model_with_per_sample_vq_losses():
    """With every codebook the trained forward is DacModel's (audio, codes); without dropout its VQ losses average to
    transformers' loss; quantizer dropout masks the codebooks a sample does not use."""
    from discodiff.codec.family import CodecModelConfig, build_codec
    from discodiff.training.codec_task import CodecAutoencoder

    model = build_codec(CodecModelConfig.from_yaml(CODEC_TINY, ["quantizer_dropout=0.0"]), seed=0).model
    autoencoder = CodecAutoencoder(model)
    audio = 0.3 * torch.randn(3, 1, 4096, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = autoencoder(audio)
        model.train()  # quantizer_dropout 0: transformers' train mode uses every codebook, and reports its VQ loss
        theirs = model(audio)
    torch.testing.assert_close(ours.audio[:, 0], theirs.audio_values, rtol=0, atol=1e-6)
    assert torch.equal(ours.codes, theirs.audio_codes)
    torch.testing.assert_close((0.25 * ours.commitment + ours.codebook).mean(), theirs.loss.mean(), rtol=1e-5, atol=0)

    with torch.no_grad():
        one = autoencoder(audio, torch.tensor([1, 4, 2]))
    single = [autoencoder(audio[i : i + 1], torch.tensor([k])) for i, k in enumerate((1, 4, 2))]
    for i, part in enumerate(single):
        torch.testing.assert_close(one.commitment[i : i + 1], part.commitment, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(one.audio[i : i + 1], part.audio, rtol=1e-4, atol=1e-6)
    assert one.commitment[0] < ours.commitment[0] and torch.equal(one.commitment[1], ours.commitment[1])


def test_decoder_input_share_detects_a_decoder_that_ignores_its_codes():
    """Without biases the decoder's output is all from its input (share 1); with biases and a zeroed input layer it
    is a fixed pattern whatever the input (the collapse: share 0 although the output is not silent)."""
    from discodiff.codec.family import CodecModelConfig, build_codec
    from discodiff.training.codec_task import CodecAutoencoder, decoder_input_share

    model = build_codec(CodecModelConfig.from_yaml(CODEC_TINY), seed=0).model
    audio = 0.3 * torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(1))
    autoencoder = CodecAutoencoder(model)
    biases = [m.bias for m in model.decoder.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    with torch.no_grad():
        for bias in biases:
            bias.zero_()
        healthy = decoder_input_share(model, autoencoder(audio))
        for bias in biases:
            bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        torch.nn.init.zeros_(model.decoder.conv1.weight)
        out = autoencoder(audio)
        collapsed = decoder_input_share(model, out)
    torch.testing.assert_close(healthy, torch.ones(2, dtype=torch.float64))
    assert torch.all(collapsed == 0) and out.audio.abs().max() > 1e-3


def test_dead_codes_are_restarted_from_the_batch_deterministically():
    """Entries whose usage average falls below the threshold are replaced by projected latents of the batch at a due
    step (drawn with the generator, so the same seed gives the same codebook); used entries and eval mode are untouched."""
    from discodiff.codec.family import CodecModelConfig, build_codec
    from discodiff.training.codec_task import CodecAutoencoder, DeadCodeSection

    def run(seed: int):
        model = build_codec(CodecModelConfig.from_yaml(CODEC_TINY, ["quantizer_dropout=0.0"]), seed=0).model
        autoencoder = CodecAutoencoder(model, DeadCodeSection(restart_every=1, decay=0.5, threshold=0.25))
        autoencoder.code_usage.fill_(1.0)
        autoencoder.code_usage[0, :3] = 0.0                       # three dead entries in codebook 0
        autoencoder.training_steps.fill_(1)                       # one step already folded into the averages
        before = model.quantizer.quantizers[0].codebook.weight.detach().clone()
        audio = 0.3 * torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(1))
        autoencoder.eval()
        autoencoder(audio, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(model.quantizer.quantizers[0].codebook.weight, before)   # eval: no restarts
        autoencoder.train()
        out = autoencoder(audio, generator=torch.Generator().manual_seed(seed))
        out.audio.sum().backward()                                 # restarted before use: autograd is consistent
        after = model.quantizer.quantizers[0].codebook.weight.detach()
        return before, after, autoencoder

    before, after, autoencoder = run(seed=0)
    changed = (after != before).any(dim=1)
    assert changed[:3].all() and autoencoder.restarted_codes >= 3
    z = autoencoder.dac.encoder(0.3 * torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(1)))
    latents = autoencoder.dac.quantizer.quantizers[0].in_proj(z).detach().transpose(1, 2).reshape(-1, after.shape[1])
    assert all(torch.isclose(latents, row, atol=1e-5).all(dim=1).any() for row in after[:3])  # rows are batch latents
    assert torch.equal(run(seed=0)[1], after) and not torch.equal(run(seed=1)[1][:3], after[:3])


def test_weight_norm_is_folded_into_the_saved_codec(tmp_path):
    """Training reparametrises the weights (DAC's weight norm); the saved codec has plain weights that compute the same."""
    from discodiff.codec import DacCodec
    from discodiff.codec.family import CodecModelConfig, CodecPipeline, build_codec
    from discodiff.training.codec_task import CodecAutoencoder

    pipeline = build_codec(CodecModelConfig.from_yaml(CODEC_TINY), seed=3)
    pipeline.model.apply_weight_norm()
    audio = 0.3 * torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained = CodecAutoencoder(pipeline.model)(audio).audio
    CodecPipeline(pipeline.model, pipeline.config).save_pretrained(tmp_path / "codec")
    codec = DacCodec.from_pretrained(tmp_path / "codec")
    assert not any("parametrizations" in name for name in codec.model.state_dict())
    decoded = codec.decode_codes(codec.encode_codes(audio, progress=False), progress=False)
    torch.testing.assert_close(decoded, trained, rtol=0, atol=1e-5)


def test_compile_snakes_swaps_every_snake_keeping_its_parameters(tmp_path):
    """Every Snake1d becomes a CompiledSnake holding the same alpha (state dict, optimiser and EMA unchanged); the
    eager formula is transformers' Snake1d bit for bit; a codec saved after the swap loads as a plain DacModel."""
    from transformers.models.dac.modeling_dac import Snake1d

    from discodiff.codec import DacCodec
    from discodiff.codec.family import CodecModelConfig, CodecPipeline, build_codec
    from discodiff.training.snake import CompiledSnake, compile_snakes, snake

    pipeline = build_codec(CodecModelConfig.from_yaml(CODEC_TINY), seed=0)
    model = pipeline.model
    snakes = {name: module for name, module in model.named_modules() if isinstance(module, Snake1d)}
    alphas = {name: module.alpha for name, module in snakes.items()}
    keys, parameters = list(model.state_dict()), [id(p) for p in model.parameters()]
    assert compile_snakes(model) == len(snakes) > 10
    assert not any(isinstance(module, Snake1d) for module in model.modules())
    assert all(isinstance(model.get_submodule(name), CompiledSnake) and model.get_submodule(name).alpha is alphas[name]
               for name in snakes)
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == parameters
    assert compile_snakes(model) == 0
    module = Snake1d(4)
    module.alpha.data = torch.tensor([0.5, 1.0, 2.0, 3.0])[None, :, None]
    x = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(snake(x, module.alpha), module(x))
    CodecPipeline(model, pipeline.config).save_pretrained(tmp_path / "codec")
    loaded = DacCodec.from_pretrained(tmp_path / "codec")
    assert any(isinstance(m, Snake1d) for m in loaded.model.modules())


@pytest.mark.slow
def test_compiled_snakes_match_the_eager_codec():
    """The compiled Snake (torch.compile, about 30 s on first use) gives the tiny codec's output and gradients to
    float32 rounding; no-grad forwards (validation) compile no graphs of their own, which would double training's (one
    per layer width) and soon pass torch._dynamo's recompile limit, falling back to eager."""
    from torch._dynamo.utils import counters

    from discodiff.codec.family import CodecModelConfig, build_codec
    from discodiff.training.codec_task import CodecAutoencoder
    from discodiff.training.snake import compile_snakes

    audio = 0.3 * torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(1))
    results = []
    for compiled in (False, True):
        model = build_codec(CodecModelConfig.from_yaml(CODEC_TINY, ["quantizer_dropout=0.0"]), seed=0).model
        if compiled:
            compile_snakes(model)
            counters.clear()
        out = CodecAutoencoder(model)(audio).audio
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1, dict(counters["stats"])
    with torch.no_grad():
        torch.testing.assert_close(CodecAutoencoder(model)(audio).audio, results[1][0], rtol=1e-4, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == graphs, "no-grad forwards compile nothing more (recompile limit 8)"
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-6)
    assert len(results[0][1]) == len(results[1][1])
    for eager, compiled in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-6)


def test_codec_overfit_bench_compares_variants_on_train_split_vocals(data_dir, capsys):
    """bench.codec_overfit: every variant trains on the same vocal batch (train split only) and reports its checks in
    order; the pitch measure gives 100% for the originals themselves; a malformed variant is refused before work."""
    from discodiff.bench import codec_overfit

    batch = codec_overfit.vocal_batch(str(data_dir), 3, 4096, SAMPLE_RATE)
    assert batch.shape == (3, 1, 4096) and batch.abs().amax() > 0.1
    within, grid, original_grid = codec_overfit.pitch_of(batch, batch, SAMPLE_RATE, 43.07)
    assert within == 1.0 and grid == original_grid
    with pytest.raises(SystemExit, match=r"has 1 train-split vocals; lower --clips \(asked 2\)"):
        codec_overfit.vocal_batch(str(data_dir / "seed1"), 2, 4096, SAMPLE_RATE)

    codec_overfit.main(["--data", str(data_dir), "--config", str(TRAIN_CONFIG), "--clips", "2", "--seconds", "0.2",
                        "--minutes", "0.01", "--checks", "2", "--variant", "narrow",
                        "--variant", "wide;model.overrides=[decoder_hidden_size=32]"])
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if "M parameters" in line]
    assert [h.split()[0] for h in headers] == ["narrow", "wide"], lines
    checks = [line for line in lines if "pitch within 50 cents" in line]
    steps = [int(line.split("step")[1].split()[0]) for line in checks]
    assert len(checks) == 4 and steps[0] < steps[1] and steps[2] < steps[3], lines
    codec_overfit.main(["--data", str(data_dir), "--config", str(TRAIN_CONFIG), "--clips", "2", "--seconds", "0.2",
                        "--steps", "4", "--checks", "2", "--variant", "by steps"])
    steps = [int(line.split("step")[1].split()[0]) for line in capsys.readouterr().out.splitlines() if "cents" in line]
    assert steps == [2, 4]
    with pytest.raises(SystemExit):
        codec_overfit.main(["--data", str(data_dir), "--config", str(TRAIN_CONFIG), "--variant", "bad;nokey"])


def test_codec_benches_train_the_discriminators_of_a_gan_variant(data_dir, monkeypatch):
    """A variant with task.gan.enabled trains its critic in bench.codec_overfit (at --lr × learning_rate_scale, as
    the loop's adversary), and a variant without it has none: the benches never drop a configured term silently."""
    from discodiff.bench import codec_overfit, codec_step
    from discodiff.training import TrainConfig
    from discodiff.training.codec_task import CodecTask

    plain = TrainConfig.from_yaml(TRAIN_CONFIG)
    assert codec_step.adversary_of(CodecTask(plain, plain.task, 0), plain.optimizer) == {}
    gan = ["task.gan.enabled=true", "task.gan.periods=[]", "task.gan.fft_sizes=[256]", "task.gan.learning_rate_scale=0.5"]
    config = TrainConfig.from_yaml(TRAIN_CONFIG, gan)
    adversary = codec_step.adversary_of(CodecTask(config, config.task, 0), config.optimizer, 2e-3)["adversary"]
    assert adversary.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)

    critics = []
    built = codec_step.adversary_of

    def recording(task, settings, learning_rate=None):
        extra = built(task, settings, learning_rate)
        if extra:
            module = extra["adversary"].model
            critics.append((module, {k: v.clone() for k, v in module.state_dict().items()}))
        return extra

    monkeypatch.setattr(codec_step, "adversary_of", recording)
    codec_overfit.overfit(str(TRAIN_CONFIG), gan, str(data_dir), 2, 0.2, None, 1, 1e-3, steps_budget=2)
    (module, before), = critics
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the GAN variant's discriminator was never stepped"


# --- data ----------------------------------------------------------------------------------------------


def test_training_clips_come_only_from_train_split_tracks(data_dir):
    train = StemClips(data_dir, clip_samples=4096, split="train", sample_rate=SAMPLE_RATE, seed=0)
    validation = StemClips(data_dir, clip_samples=4096, split="validation", sample_rate=SAMPLE_RATE, seed=0)
    assert len(train.track_ids) == 4 and len(validation.track_ids) == 3
    assert {t.split("/")[0] for t in train.track_ids} == {"seed0", "seed1"}, "nested folders are scanned"
    assert len(train) == 4 * 3 and len(validation) == 3 * 3  # every stem of every track is an item source
    seen = set()
    for epoch in range(3):
        train.set_epoch(epoch)
        for index in range(len(train)):
            item = train[index]
            assert item["audio"].shape == (1, 4096) and item["audio"].dtype == torch.float32
            seen.add(item["track_ids"])
    assert seen == set(train.track_ids) and {split_of_track(data_dir, t) for t in seen} == {"train"}
    assert {split_of_track(data_dir, t) for t in validation.track_ids} == {"validation"}

    again = StemClips(data_dir, clip_samples=4096, split="train", sample_rate=SAMPLE_RATE, seed=0)
    again.set_epoch(2)
    assert all(torch.equal(again[i]["audio"], train[i]["audio"]) for i in range(len(train))), "a function of (seed, epoch, index)"
    train.set_epoch(0)
    assert any(not torch.equal(again[i]["audio"], train[i]["audio"]) for i in range(len(train))), "epochs draw new crops"

    first = [validation[i] for i in range(3)]
    assert len({item["track_ids"] for item in first}) == 3, "the first validation items are different tracks"
    assert [item["captions"].split(":")[0] for item in first] == ["vocals", "accompaniment", "mixture"]
    validation.set_epoch(5)
    assert all(torch.equal(validation[i]["audio"], item["audio"]) for i, item in enumerate(first)), "fixed crops"


def test_held_out_composers_and_unrendered_tracks_are_refused(data_dir, tmp_path):
    from discodiff.errors import DataError
    from discodiff.training.codec_data import scan_tracks

    mixed = write_rendered_tree(tmp_path / "mixed")
    write_track(mixed / "seed0" / "mozart-k331", "mozart/k331", seed=30)
    with pytest.raises(DataError, match=r"seed0/mozart-k331: mozart/k331: not a Bach piece; other composers are held out"):
        StemClips(mixed, clip_samples=4096, split="train", sample_rate=SAMPLE_RATE)
    bare = write_rendered_tree(tmp_path / "bare")
    write_track(bare / "seed1" / "untitled", None, seed=31)
    with pytest.raises(DataError, match=r"seed1/untitled: no metadata.json"):
        scan_tracks(bare)
    write_track(tmp_path / "other_rate" / "x", pieces("train", 1)[0], seed=1, seconds=0.2)
    data, _ = sf.read(str(tmp_path / "other_rate" / "x" / "vocals.wav"))
    sf.write(str(tmp_path / "other_rate" / "x" / "vocals.wav"), data, 22050, subtype="FLOAT")
    with pytest.raises(DataError, match=r"vocals.wav: 22050 Hz, but the codec runs at 44100 Hz"):
        StemClips(tmp_path / "other_rate", clip_samples=4096, split="train", sample_rate=SAMPLE_RATE)
    with pytest.raises(DataError, match=r"no rendered tracks of the Bach validation split"):
        StemClips(tmp_path / "other_rate", clip_samples=4096, split="validation", sample_rate=SAMPLE_RATE)


# --- the task section -------------------------------------------------------------------------------


def test_task_config_refuses_gan_short_clips_and_a_missing_dac(data_dir, monkeypatch):
    from discodiff.errors import ConfigError, MissingExtraError
    from discodiff.training import TrainConfig, Trainer
    from discodiff.training.codec_task import CodecTask, CodecTaskConfig

    config = TrainConfig.from_yaml(TRAIN_CONFIG, [f"data.data_dir={data_dir}"])
    assert isinstance(config.task, CodecTaskConfig) and config.task.weights.mel == 15.0
    assert config.optimizer.betas == [0.8, 0.99] and config.optimizer.learning_rate == 1e-4
    assert not config.task.gan.enabled and CodecTask(config, config.task, 0).adversary is None
    with pytest.raises(ConfigError, match=r"task.gan.enabled=true with no discriminator .*task.gan.fft_sizes=\[1024\]"):
        TrainConfig.from_yaml(TRAIN_CONFIG, ["task.gan.enabled=true", "task.gan.fft_sizes=[]"])
    accumulating = TrainConfig.from_yaml(TRAIN_CONFIG, [f"data.data_dir={data_dir}", "task.gan.enabled=true",
                                                        "optimizer.gradient_accumulation_steps=2", "logging.log_with=none"])
    with pytest.raises(ConfigError, match=r"gradient_accumulation_steps=2: the CodecTask trains an adversary.*=1"):
        Trainer(accumulating)
    with pytest.raises(ConfigError, match=r"task.clip_seconds=0.01: shorter than one codec frame \(512 samples"):
        CodecTask.check(TrainConfig.from_yaml(TRAIN_CONFIG, [f"data.data_dir={data_dir}", "task.clip_seconds=0.01"]))
    monkeypatch.setitem(sys.modules, "dac", None)
    monkeypatch.setitem(sys.modules, "dac.nn", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'discodiff\[dac\]' \(on CPU-only torch: bash scripts/install.sh --descript\)"):
        CodecTask.check(config)


def test_gan_losses_per_sample_average_to_dac_gan_loss():
    """codec_gan's per-sample discriminator, adversarial and feature losses average to dac.nn.loss.GANLoss's."""
    from audiotools import AudioSignal
    from dac.nn.loss import GANLoss

    from discodiff.training.codec_gan import GanSection, build_discriminator, discriminator_loss, generator_losses

    torch.manual_seed(0)
    critic = build_discriminator(GanSection(periods=[3], fft_sizes=[256]), SAMPLE_RATE)
    generator = torch.Generator().manual_seed(1)
    real = 0.3 * torch.randn(3, 1, 2048, generator=generator)
    fake = real + 0.2 * torch.randn(3, 1, 2048, generator=generator)
    stock = GANLoss(critic)
    signals = AudioSignal(fake.clone(), SAMPLE_RATE), AudioSignal(real.clone(), SAMPLE_RATE)
    fake_maps, real_maps = critic(fake), critic(real)
    ours = discriminator_loss(fake_maps, real_maps)
    assert ours.shape == (3,) and len({round(v, 5) for v in ours.tolist()}) == 3
    torch.testing.assert_close(ours.mean(), stock.discriminator_loss(*signals), rtol=1e-5, atol=0)
    adversarial, feature = generator_losses(fake_maps, real_maps)
    stock_adversarial, stock_feature = stock.generator_loss(*signals)
    torch.testing.assert_close(adversarial.mean(), stock_adversarial, rtol=1e-5, atol=0)
    torch.testing.assert_close(feature.mean(), stock_feature, rtol=1e-5, atol=0)
    assert feature.min() > 0 and generator_losses(real_maps, real_maps)[1].abs().max() == 0


def test_adversary_steps_once_and_lends_itself_frozen():
    """Adversary.update clears gradients the module's loss left, steps the adversary's optimiser and schedule once;
    frozen() lends the unwrapped adversary without gradients of its own and restores requires_grad after."""
    from accelerate import Accelerator

    from discodiff.training.adversary import Adversary

    accelerator = Accelerator(cpu=True)
    critic, module = torch.nn.Linear(4, 1), torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model, optimizer, schedule = accelerator.prepare(critic, optimizer, schedule)
    adversary = Adversary(accelerator, model, optimizer, schedule, max_grad_norm=10.0)
    x = torch.randn(5, 4)
    with adversary.frozen() as frozen:
        assert frozen is critic and not any(p.requires_grad for p in critic.parameters())
        frozen(module(x)).sum().backward()
    assert all(p.requires_grad and p.grad is None for p in critic.parameters())
    assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    weight, bias = (p.detach().clone().requires_grad_() for p in (critic.weight, critic.bias))
    gradient = torch.autograd.grad(torch.nn.functional.linear(x, weight, bias).square().mean(), weight)[0]
    critic.weight.grad = torch.full_like(critic.weight, 1e6)  # a stale gradient must not reach the step
    loss = adversary.update(lambda c: c(x).square().mean())
    torch.testing.assert_close(critic.weight.detach(), weight.detach() - 0.1 * gradient)
    assert critic.weight.grad is None and not loss.requires_grad
    assert schedule.get_last_lr() == [0.05] and set(adversary.metrics) == {"train/adversary_loss", "train/adversary_grad_norm"}


def test_resume_refuses_changed_tracks(tmp_path):
    from discodiff.errors import TrainingError
    from discodiff.training import TrainConfig
    from discodiff.training.codec_task import DATA_FILE, CodecTask

    root = write_rendered_tree(tmp_path / "data")
    config = TrainConfig.from_yaml(TRAIN_CONFIG, [f"data.data_dir={root}"])
    task = CodecTask(config, config.task, 0)
    data = task.training_data(config.data, config.validation.num_items)
    assert len(data.validation) == 4 and len(data.train) == 12
    task.write_run_files(tmp_path)
    assert json.loads((tmp_path / DATA_FILE).read_text())["clip_samples"] == 4096
    task.check_resume(tmp_path)
    write_track(root / "seed2" / "late", pieces("train", 5)[4], seed=40)
    task.training_data(config.data, config.validation.num_items)
    with pytest.raises(TrainingError, match=r"--resume: the train tracks differ .*1 added, 0 removed \(e.g. seed2/late\)"):
        task.check_resume(tmp_path)


# --- through train/train.py, train/export.py and the CLI -------------------------------------------------


def train(run_dir: Path, data_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    overrides = [f"output_dir={run_dir}", f"data.data_dir={data_dir}", "max_steps=4", "progress=false",
                 "data.dataset=test_codec_training:CrashingStemClips", "logging.log_with=none", "validation.every=2",
                 "samples.every=4", "checkpoint.every=2", "optimizer.learning_rate=1e-3"]
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config", str(TRAIN_CONFIG), *overrides, *args],
                          env={**subprocess_env(), **(env or {})}, capture_output=True, text=True, timeout=600)


def validation_records(run_dir: Path) -> dict[int, dict]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r for r in records if "val/loss" in r}


def test_codec_trains_resumes_exports_loads_and_reconstructs(data_dir, tmp_path):
    """train/train.py: a run that crashes after its step-2 checkpoint and is resumed equals an uninterrupted one
    (losses, validation metrics, weights); the codebook metrics are logged; train/export.py writes a codec directory
    that DacCodec.from_pretrained and discodiff.load_pipeline load, `discodiff reconstruct --codec` uses, and
    `discodiff sample` refuses in one line."""
    from safetensors.torch import load_file

    import discodiff
    from discodiff.cli import app
    from discodiff.codec import DacCodec

    whole, split = tmp_path / "whole", tmp_path / "split"
    result = train(whole, data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    result = train(split, data_dir, env={CRASH_AFTER: str(split / "checkpoints" / "checkpoint-2")})
    assert result.returncode == CRASH_STATUS and sorted(train_losses(split)) == [1, 2], result.stderr[-3000:]
    result = train(split, data_dir, "--resume", "latest")
    assert result.returncode == 0 and "resumed from" in result.stdout + result.stderr, result.stderr[-3000:]

    assert train_losses(split) == train_losses(whole) and sorted(train_losses(whole)) == [1, 2, 3, 4]
    assert validation_records(split) == validation_records(whole) and sorted(validation_records(whole)) == [2, 4]
    final = [load_file(run / "checkpoints" / "checkpoint-4" / "model.safetensors") for run in (whole, split)]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    assert not (whole / "checkpoints" / "checkpoint-4" / "model_1.safetensors").exists(), "no discriminator without gan"
    record = validation_records(whole)[4]
    for key in ("val/mel", "val/sisdr_db", "val/commitment", "val/codebook", "val/encoder_variance",
                "val/encoder_time_variance", "val/decoder_input_share", "val/codebook/perplexity_0", "val/codebook/used_3",
                "val/codebook/perplexity_min", "val/codebook/used_min"):
        assert key in record and np.isfinite(record[key]), key
    assert 1.0 <= record["val/codebook/perplexity_0"] <= 64 and 0 < record["val/codebook/used_0"] <= 1
    assert record["val/encoder_variance"] > 0
    assert sf.info(str(whole / "samples" / "step-4" / "0.wav")).frames == 4096
    assert (whole / "samples" / "reference" / "1.wav").is_file() and (whole / "codec_data.json").is_file()

    exported = tmp_path / "codec"
    result = subprocess.run([sys.executable, str(EXPORT_SCRIPT), str(whole), str(exported)], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((exported / "pipeline.json").read_text())["family"] == "codec"
    codec = DacCodec.from_pretrained(exported)
    loaded = discodiff.load_pipeline(exported)
    assert isinstance(loaded, DacCodec) and loaded.fingerprint() == codec.fingerprint()
    assert (codec.sample_rate, codec.hop_length, codec.n_codebooks, codec.codebook_dim) == (SAMPLE_RATE, 512, 4, 4)

    out = tmp_path / "refused.wav"
    result = runner.invoke(app, ["sample", "--model", str(exported), "--prompt", "x", "--out", str(out)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "'codec' model" in errors[0], result.output
    assert not out.exists()

    take = data_dir / "seed0" / pieces("train", 1)[0].replace("/", "-") / "mixture.wav"
    result = runner.invoke(app, ["reconstruct", str(take), str(tmp_path / "recon.wav"), "--codec", str(exported), "--quiet"])
    assert result.exit_code == 0, result.output
    recon, rate = sf.read(str(tmp_path / "recon.wav"))
    assert rate == SAMPLE_RATE and recon.shape == (sf.info(str(take)).frames,) and np.isfinite(recon).all()


def test_codec_gan_trains_and_resumes_bit_exactly(data_dir, tmp_path):
    """task.gan.enabled: the discriminator (checkpointed as model_1 with optimizer_1 and scheduler_1) is trained
    beside the codec, its loss and gradient norm are logged every step, and a run stopped by max_minutes after step 1
    and resumed equals an uninterrupted one, discriminator and its optimiser moments included (in-process)."""
    from accelerate.state import AcceleratorState, GradientState
    from safetensors.torch import load_file

    from discodiff.training import TrainConfig, Trainer

    def run(run_dir: Path, *extra: str, resume: str | None = None) -> None:
        settings = [f"output_dir={run_dir}", f"data.data_dir={data_dir}", "max_steps=3", "progress=false",
                    "logging.log_with=none", "validation.every=0", "samples.every=0", "checkpoint.every=100",
                    "optimizer.learning_rate=1e-3", "task.gan.enabled=true", *extra]
        try:
            Trainer(TrainConfig.from_yaml(TRAIN_CONFIG, settings)).train(resume=resume)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()

    whole, split = tmp_path / "whole", tmp_path / "split"
    run(whole)
    run(split, "max_minutes=1e-9")
    assert sorted(train_losses(split)) == [1] and (split / "checkpoints" / "checkpoint-1" / "model_1.safetensors").is_file()
    run(split, resume="latest")
    assert train_losses(split) == train_losses(whole) and sorted(train_losses(whole)) == [1, 2, 3]
    steps = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train/adversary_loss"]) and r["train/adversary_grad_norm"] > 0 for r in steps)
    checkpoint = [run_dir / "checkpoints" / "checkpoint-3" for run_dir in (whole, split)]
    for name in ("model.safetensors", "model_1.safetensors"):
        first, second = (load_file(c / name) for c in checkpoint)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name
    moments = [torch.load(c / "optimizer_1.bin", weights_only=False)["state"] for c in checkpoint]
    assert all(torch.equal(moments[0][k]["exp_avg"], moments[1][k]["exp_avg"]) for k in moments[0])
    start = load_file(split / "checkpoints" / "checkpoint-1" / "model_1.safetensors")
    end = load_file(checkpoint[0] / "model_1.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start), "the discriminator trains"


def test_new_model_builds_a_codec_directory(tmp_path):
    import discodiff
    from discodiff.cli import app
    from discodiff.codec import DacCodec

    result = runner.invoke(app, ["new-model", str(tmp_path / "a"), "--config", str(CODEC_TINY)])
    assert result.exit_code == 0 and "untrained codec model" in result.output, result.output
    assert json.loads((tmp_path / "a" / "pipeline.json").read_text())["family"] == "codec"
    codec = discodiff.load_pipeline(tmp_path / "a")
    assert isinstance(codec, DacCodec) and codec.n_codebooks == 4 and codec.spec.codebook_size == 64
    result = runner.invoke(app, ["new-model", str(tmp_path / "b"), "--config", str(CODEC_TINY), "--set", "n_codebooks=2"])
    assert result.exit_code == 0, result.output
    assert DacCodec.from_pretrained(tmp_path / "b").n_codebooks == 2
    again = runner.invoke(app, ["new-model", str(tmp_path / "c"), "--config", str(CODEC_TINY)])
    assert again.exit_code == 0 and DacCodec.from_pretrained(tmp_path / "c").fingerprint() == codec.fingerprint(), "seeded"
    bad = runner.invoke(app, ["new-model", str(tmp_path / "d"), "--config", str(CODEC_TINY), "--set", "upsampling_ratios=[2,4,8,8]"])
    assert bad.exit_code == 1 and "must be downsampling_ratios reversed" in bad.output and not (tmp_path / "d").exists()


def test_two_process_ddp_on_cpu_ends_with_identical_weights(data_dir, tmp_path):
    """``accelerate launch`` (2 processes, gloo): the codec's forward goes through the DDP wrapper, so both ranks end
    with the same weights and EMA, and validation gathers every rank's clips."""
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu_ddp.yaml"),
               "--main_process_port", str(free_port()), str(Path(__file__).resolve()), f"output_dir={run_dir}",
               f"data.data_dir={data_dir}", "max_steps=2", "progress=false", "logging.log_with=none", "validation.every=2",
               "validation.batch_size=2", "samples.every=2", "checkpoint.every=2", "optimizer.learning_rate=1e-3",
               "task.dead_codes.restart_every=0"]  # restarts are single-process (see codec_task)
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((run_dir / f"rank-{i}.json").read_text()) for i in range(2)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["ema"] == ranks[1]["ema"]
    assert ranks[0]["weights"] != ranks[0]["initial_weights"]
    assert sorted(validation_records(run_dir)) == [2] and (run_dir / "samples" / "step-2" / "1.wav").is_file()


def ddp_rank_main(args: list[str]) -> None:
    """One DDP rank: train the tiny codec, then write this rank's weight digests to ``output_dir/rank-<i>.json``."""
    from discodiff.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig.from_yaml(TRAIN_CONFIG, args))
    initial = tensor_digest(trainer.model.parameters())
    run_dir = trainer.train()
    accelerator = trainer.accelerator
    report = {"num_processes": accelerator.num_processes, "initial_weights": initial,
              "weights": tensor_digest(accelerator.unwrap_model(trainer.model).parameters()),
              "ema": tensor_digest(trainer.state.ema.shadow_params)}
    (run_dir / f"rank-{accelerator.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    ddp_rank_main(sys.argv[1:])
