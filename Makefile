# purestep: `make train-vae` sets everything up on a fresh machine; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WARMED := $(VENV)/.warmed
ARGS ?=
# one process per GPU where there are GPUs (torchrun refuses more ranks than GPUs), else 2 CPU processes
NPROC ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); [ "$$n" -gt 0 ] 2>/dev/null && echo $$n || echo 2)
# torchrun on this machine: gloo on CPU, NCCL on GPUs; several machines: see docs/data-parallel.md
TORCHRUN := $(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC)

TB_PORT ?= 6006

.PHONY: tensorboard explore test-browser setup train-ae train-vae train-gan train-ae-ddp train-vae-ddp train-gan-ddp eval eval-gan compare-gan-losses train-gan-photos data-emoji data-abstract train-gan-emoji train-gan-abstract eval-folders train-classifier train-classifier-emoji compare-ae-vae compare-generators sweep-vae test lint bench bench-compare smoke-gpu clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) $(WARMED)  ## create .venv, install the pinned dependencies, prepare the default commands' compiled steps

$(WARMED): $(STAMP)  # once per machine (the cache is per user); a later `make setup` skips it
	$(PY) -m experiments.warm
	touch $(WARMED)

train-ae: $(STAMP)  ## train an auto-encoder (flags: make train-ae ARGS="--arch mlp --epochs 5")
	$(PY) -m experiments.ae $(ARGS)

train-vae: $(STAMP)  ## train a VAE (flags: make train-vae ARGS="--arch mlp --latent-dim 2")
	$(PY) -m experiments.vae $(ARGS)

train-gan: $(STAMP)  ## train a GAN (flags: make train-gan ARGS="--dataset fashion-mnist --loss hinge --epochs 10")
	$(PY) -m experiments.gan $(ARGS)

train-ae-ddp: $(STAMP)  ## train-ae on NPROC data-parallel processes (make train-ae-ddp NPROC=2 ARGS=...)
	$(TORCHRUN) -m experiments.ae $(ARGS)

train-vae-ddp: $(STAMP)  ## train-vae on NPROC data-parallel processes; --batch-size is the global batch
	$(TORCHRUN) -m experiments.vae $(ARGS)

train-gan-ddp: $(STAMP)  ## train-gan on NPROC data-parallel processes
	$(TORCHRUN) -m experiments.gan $(ARGS)

eval-gan: $(STAMP)  ## score a finished GAN run against the real data: RUN/report.md (make eval-gan RUN=runs/...)
	@test -n "$(RUN)" || { echo "usage: make eval-gan RUN=<gan run dir> [ARGS=--vae-run runs/vae-...]"; exit 2; }
	$(PY) -m experiments.eval_gan $(RUN) $(ARGS)

compare-gan-losses: $(STAMP)  ## every GAN loss x 3 seeds on one architecture and budget: docs/gan-losses.md
	$(PY) -m experiments.gan_losses $(ARGS)

PHOTOS ?= data/photo-crops
train-gan-photos: $(STAMP)  ## a 64x64 RGB GAN on crops of matplotlib's sample photographs, scored by SWD
	@test -d $(PHOTOS) || $(PY) -m experiments.photo_crops $(PHOTOS)
	$(PY) -m experiments.gan --dataset imagefolder --image-folder $(PHOTOS) $(ARGS)

# a Debian package the target needs, installed with apt-get where it is missing ($(1): packages, $(2): a file it ships)
APT = test -e $(2) || { command -v apt-get >/dev/null || { echo "apt-get not found: install $(1) with your package manager"; exit 2; }; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(1); }
EMOJI ?= data/emoji
ABSTRACT ?= data/abstract

data-emoji: $(STAMP)  ## Noto Color Emoji, 64x64 on white, a subfolder per Unicode group, into $(EMOJI) (apt: fonts-noto-color-emoji unicode-data)
	@$(call APT,fonts-noto-color-emoji unicode-data,/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf)
	@$(call APT,unicode-data,/usr/share/unicode/emoji/emoji-test.txt)
	@test -d $(EMOJI) || $(PY) -m experiments.folders emoji $(EMOJI)

data-abstract: $(STAMP)  ## 10,000 64x64 crops of the abstract wallpapers into $(ABSTRACT) (apt: gnome-backgrounds mate-backgrounds)
	@$(call APT,gnome-backgrounds,/usr/share/backgrounds/gnome)
	@$(call APT,mate-backgrounds,/usr/share/backgrounds/mate)
	@test -d $(ABSTRACT) || $(PY) -m experiments.folders abstract $(ABSTRACT)

train-gan-emoji: data-emoji  ## make train-gan on the emoji folder, 96 epochs (the folder recipe: a 32-wide DCGAN pair, minibatch std in D, DiffAugment, R1 + R2; 52 min on 2 AVX2 cores)
	$(PY) -m experiments.gan --image-folder $(EMOJI) --epochs 96 $(ARGS)

train-gan-abstract: data-abstract  ## make train-gan on the abstract-wallpaper crops, 108 epochs, no colour jitter, R1/R2 gamma 0.3 (about 2 h 14 min on 2 AVX2 cores in fp32)
	$(PY) -m experiments.gan --image-folder $(ABSTRACT) --epochs 108 --augment translation,cutout --r1-gamma 0.3 --r2-gamma 0.3 $(ARGS)

eval-folders: $(STAMP)  ## SWD (with its floor), diversity and a nearest-neighbour grid of folder A against folder B
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make eval-folders A=<samples folder> B=<data folder>"; exit 2; }
	$(PY) -m experiments.eval_folders $(A) $(B) $(ARGS)

train-classifier: $(STAMP)  ## retrain the FID/IS feature classifiers committed in models/weights/
	$(PY) -m experiments.classifier --dataset mnist --epochs 8 --target-accuracy 0.993 $(ARGS)
	$(PY) -m experiments.classifier --dataset fashion-mnist --epochs 10 --target-accuracy 0.91 $(ARGS)

train-classifier-emoji: data-emoji  ## retrain the emoji-group classifier behind the emoji folder's FID (models/weights/)
	$(PY) -m experiments.classifier --dataset imagefolder --image-folder $(EMOJI) --width 16 --epochs 15 --batch-size 64 --max-shift 4 --lr 2e-3 --warmup 100 $(ARGS)

eval: $(STAMP)  ## evaluate a finished AE/VAE run and write RUN/report.md (make eval RUN=runs/...)
	@test -n "$(RUN)" || { echo "usage: make eval RUN=<run dir> [ARGS=--iwae-k 1000]"; exit 2; }
	$(PY) -m experiments.evaluate $(RUN) $(ARGS)

compare-ae-vae: $(STAMP)  ## train (or reuse) an AE and a VAE alike, evaluate both, write report.md
	$(PY) -m experiments.compare $(ARGS)

compare-generators: $(STAMP)  ## AE+GMM, VAE, VampPrior VAE, GAN, conditional GAN: one table of FID/precision/recall/IS (docs/generators.md)
	$(PY) -m experiments.compare_generators $(ARGS)

sweep-vae: $(STAMP)  ## every combination of comma-separated values (make sweep-vae ARGS="--beta 0.5,1,4")
	$(PY) -m experiments.sweep $(ARGS)

test: $(STAMP)  ## the test suite (CPU; CUDA tests skip without a GPU)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15 tests $(ARGS)

test-browser: $(STAMP)  ## explore.html in headless Chromium: installs chromium + chromedriver (apt) and selenium
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; }
	$(PY) -m pip install --quiet -e '.[dev,browser]'
	$(PY) -m pytest -q tests/test_browser.py -rs $(ARGS)

tensorboard: $(STAMP)  ## TensorBoard over every run in runs/, on http://127.0.0.1:$(TB_PORT)
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1 --port $(TB_PORT)

explore: $(STAMP)  ## write explore.html for a finished run (make explore RUN=runs/...); new runs write their own
	@test -n "$(RUN)" || { echo "usage: make explore RUN=<run dir>"; exit 2; }
	$(PY) -m experiments.explore $(RUN) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check engine harness evaluation models losses experiments tests bench

bench: $(STAMP)  ## throughput suite; JSON and a markdown table land in bench/results/ (the run before: previous.json)
	@if [ -f bench/results/latest.json ]; then mv bench/results/latest.json bench/results/previous.json; fi
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-json=bench/results/latest.json $(ARGS)

smoke-gpu: $(STAMP)  ## on a GPU machine first: compiled, CUDA-graph, fp16/bf16 steps, a resume, a GAN step, CUDA bench rows
	$(PY) -m bench.smoke_gpu $(ARGS)

bench-compare: $(STAMP)  ## compare the last two bench runs: cases >10% slower flagged, exit 1 if any
	$(PY) -m bench.compare bench/results/previous.json bench/results/latest.json

clean-runs:
	rm -rf runs
