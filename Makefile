# The zoo's two README commands: `make train` (set-up + main job) and `make test` (set-up + tests).
# Every target is idempotent: the venv, the install and the data are made only when missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

# The overrides that continue a run in folder $(1) from its last checkpoint, or start it afresh.
resume = $$(test -f $(1)/checkpoints/last.ckpt && echo ckpt_path=last || echo overwrite=true)

.PHONY: setup data test test-slow train lint models bench-cliquenet bench-efficiency compare-budget budget-schedules speedrun speedrun-ablation speedrun-whiten weights weights-cliquenet save-progress equal-size bench-odenet compare bench time-to-accuracy

setup: $(STAMP) data

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

data:
	@if [ -f $(FMNIST) ]; then \
		echo "Fashion-MNIST: found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "Fashion-MNIST: apt-get failed; tests that need it will be skipped"; \
	else \
		echo "Fashion-MNIST: missing. Install it with 'sudo apt-get install dataset-fashion-mnist'"; \
		echo "  or put the four IDX .gz files in a folder and pass data.root=FOLDER;"; \
		echo "  tests that need it will be skipped."; \
	fi

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check zoo tests train.py evaluate.py
	$(VENV)/bin/ruff format --check zoo tests train.py evaluate.py

models: setup
	$(PY) -m zoo.tools.model_table

# The main job: LeNet-5 on Fashion-MNIST, 10 epochs on the CPU, then test accuracy and a summary.
train: setup
	$(PY) train.py model=lenet5 data=fashion_mnist trainer=cpu

# CliqueNet: fast block vs edge loop, memory-efficient mode (writes docs/cliquenet_bench.json).
bench-cliquenet: setup
	$(PY) -m zoo.bench.cliquenet --out docs/cliquenet_bench.json

# Training efficiency of every small-input family and the allocator policy, side by side
# (docs/performance.md's efficiency table; about 20 min on 2 cores).
bench-efficiency: setup
	$(PY) -m zoo.bench.efficiency --doc docs/performance.md

# Our Fashion-MNIST weights under weights/ (the commands recorded in each weights/*.json).
weights: setup
	$(PY) train.py model=lenet5 threads=1 hydra.run.dir=runs/weights/lenet5
	$(PY) -m zoo.tools.export runs/weights/lenet5/checkpoints/best.ckpt weights/lenet5_fmnist.safetensors \
		--command "python train.py model=lenet5 threads=1 hydra.run.dir=runs/weights/lenet5"
	$(PY) train.py experiment=resnet20_fmnist threads=2 hydra.run.dir=runs/weights/resnet20
	$(PY) -m zoo.tools.export runs/weights/resnet20/checkpoints/best.ckpt weights/resnet20_fmnist.safetensors \
		--command "python train.py experiment=resnet20_fmnist threads=2 hydra.run.dir=runs/weights/resnet20"

# Long runs outlive a wiped work tree through a committed copy of their newest checkpoint:
# `make save-progress` copies the last.ckpt of each unfinished long run to $(PROGRESS)/ (commit
# it; a finished run's copy is deleted), and each long run's target starts from that copy when its
# own folder has none, so the schedule goes on where the copy left it.
PROGRESS := weights/in-progress
progress_copy = $(PROGRESS)/$(patsubst runs/%,%,$(1))/last.ckpt
restore = test -f $(1)/checkpoints/last.ckpt || test ! -f $(call progress_copy,$(1)) \
	|| { mkdir -p $(1)/checkpoints && cp $(call progress_copy,$(1)) $(1)/checkpoints/last.ckpt \
	&& echo "$(1): resuming from $(call progress_copy,$(1))"; }

# Our CliqueNet Fashion-MNIST weights: one 30-epoch schedule (ResNet-20's recipe, dropout off,
# 30-45 min an epoch on one thread here), run in pieces: rerun the target to resume from the
# last checkpoint (written every 15 minutes); the export runs once training has finished.
# model.memory_efficient=true: recomputation in backward, exact, and 7 % faster a step here
# (docs/cliquenet.md, "Speed and memory").
CLIQUE_RUN := runs/weights/cliquenet
CLIQUE_TRAIN := python train.py experiment=cliquenet_fmnist_weights model.memory_efficient=true threads=1 \
	hydra.run.dir=$(CLIQUE_RUN)
weights-cliquenet: setup
	@$(call restore,$(CLIQUE_RUN))
	test -f $(CLIQUE_RUN)/results.json || $(VENV)/bin/$(CLIQUE_TRAIN) ckpt_path=last
	$(PY) -m zoo.tools.export $(CLIQUE_RUN)/checkpoints/best.ckpt weights/cliquenet_k36_t12_ac_fmnist.safetensors \
		--command "$(CLIQUE_TRAIN), each later piece resumed with ckpt_path=last"
	$(PY) -m zoo.tools.curve_table $(CLIQUE_RUN) --write docs/performance.md --marker cliquenet-curve

# CliqueNet vs DenseNet at equal growth rate and layers per block (k=36, T=12; the authors'
# README Tab. 4), the weights recipe for EQUAL_SIZE_EPOCHS epochs, one thread each, for every seed in
# EQUAL_SIZE_SEEDS: `make -j2 equal-size` trains two runs side by side (10 epochs on a loaded day:
# 2.9 h for DenseNet, 5.8 h for CliqueNet, per seed; resumable). Table (mean ± spread over the seeds)
# in docs/cliquenet.md#cliquenet-vs-densenet-at-equal-size.
# A finished run's results.json is copied to docs/comparison/ (committed: the table's input outlives
# runs/, and a finished run is not trained again in a fresh checkout).
EQUAL_SIZE_EPOCHS := 10
EQUAL_SIZE_SEEDS := 0 1
EQUAL_SIZE_MODELS := cliquenet_k36_t12 densenet16_k36
EQUAL_SIZE_DIR := runs/equal-size-$(EQUAL_SIZE_EPOCHS)ep
EQUAL_SIZE_RESULTS := docs/comparison/equal-size-$(EQUAL_SIZE_EPOCHS)ep
EQUAL_SIZE_RUNS := $(foreach s,$(EQUAL_SIZE_SEEDS),$(foreach m,$(EQUAL_SIZE_MODELS),$(m)-seed$(s)))
equal-size: $(foreach run,$(EQUAL_SIZE_RUNS),$(EQUAL_SIZE_RESULTS)/$(run).json)
	$(PY) -m zoo.tools.seed_table $(EQUAL_SIZE_RESULTS) --time-to 90 92 94 --write docs/cliquenet.md --marker equal-size

# $* is MODEL-seedN.
$(EQUAL_SIZE_RESULTS)/%.json: | setup
	@$(call restore,$(EQUAL_SIZE_DIR)/$*)
	test -f $(EQUAL_SIZE_DIR)/$*/results.json || $(PY) train.py experiment=cliquenet_fmnist_weights \
		model=$(firstword $(subst -seed, ,$*)) seed=$(lastword $(subst -seed, ,$*)) \
		trainer.max_epochs=$(EQUAL_SIZE_EPOCHS) threads=1 hydra.run.dir=$(EQUAL_SIZE_DIR)/$* \
		$(call resume,$(EQUAL_SIZE_DIR)/$*)
	mkdir -p $(@D) && cp $(EQUAL_SIZE_DIR)/$*/results.json $@.part && mv $@.part $@

# $(call save_copy,RUN,COPY): RUN's last.ckpt to COPY (atomically), or no COPY once RUN has finished.
save_copy = if [ -f $(1)/results.json ]; then rm -f $(2); \
	elif [ -f $(1)/checkpoints/last.ckpt ]; then mkdir -p $(dir $(2)) \
	&& cp $(1)/checkpoints/last.ckpt $(2).part && mv $(2).part $(2) && echo $(2); fi;
LONG_RUNS := $(CLIQUE_RUN) $(foreach run,$(EQUAL_SIZE_RUNS),$(EQUAL_SIZE_DIR)/$(run))
save-progress:
	@$(foreach run,$(LONG_RUNS),$(call save_copy,$(run),$(call progress_copy,$(run))))

# ODE-Net: training memory vs NFE with and without the adjoint (docs/odenet_bench.json + table in
# docs/odenet.md).
bench-odenet: setup
	$(PY) -m zoo.bench.odenet --out docs/odenet_bench.json

# The comparison table of every family on Fashion-MNIST at 28x28 (docs/comparison.*), with the
# accuracy of the training runs found under runs/.
compare: setup
	$(PY) evaluate.py task=compare threads=2 "runs=[runs/**/results.json]" output_dir=docs \
		hydra.run.dir=runs/evaluate/compare

# Every small-input family trained on Fashion-MNIST with one recipe and the same 15-minute budget
# (experiment=budget_fmnist), then the comparison table with their accuracy (docs/comparison.md),
# with the speedrun recipe's ResNet-20 rows when `make speedrun` has run.
# About 2 h 20 min on 2 cores; rerun to resume: finished models are skipped, an interrupted one
# continues from its last checkpoint (one stopped before its first checkpoint starts over).
BUDGET_MODELS := lenet5 alexnet_cifar vgg11_bn_cifar googlenet_cifar resnet20 resnet20_noshort \
	densenet_bc100_k12 cliquenet_k36_t12_ac odenet_mnist
compare-budget: setup
	@for m in $(BUDGET_MODELS); do \
		d=runs/budget/$$m; test -f $$d/results.json && continue; \
		$(PY) train.py experiment=budget_fmnist model=$$m threads=2 hydra.run.dir=$$d \
			$(call resume,$$d) || exit 1; \
	done
	$(PY) evaluate.py task=compare threads=2 output_dir=docs hydra.run.dir=runs/evaluate/compare-budget \
		"runs=[runs/budget/*/results.json$$(ls runs/speedrun/fmnist_speedrun-*/results.json >/dev/null 2>&1 \
		&& echo ,runs/speedrun/fmnist_speedrun-*/results.json)]"

# Budgeted Training's finding checked on LeNet-5: linear decay to zero against step decay (/10 at
# 50 % and 75 % of the budget) at three budgets, two seeds each (about 15 min on 2 cores; resumable).
SCHEDULE_BUDGETS := 20 40 80
budget-schedules: setup
	@for b in $(SCHEDULE_BUDGETS); do for s in linear multistep; do for seed in 0 1; do \
		d=runs/budget-schedules/lenet5-$$s-$${b}s-seed$$seed; test -f $$d/results.json && continue; \
		$(PY) train.py experiment=budget_fmnist model=lenet5 scheduler=$$s train.budget_s=$$b \
			seed=$$seed callbacks.test_curve=false threads=2 hydra.run.dir=$$d \
			$(call resume,$$d) || exit 1; \
	done; done; done
	$(PY) -m zoo.tools.budget_schedules runs/budget-schedules --write docs/training.md

# Time to accuracy on Fashion-MNIST (docs/training.md#time-to-94-): experiment=fmnist_speedrun and
# the budget recipe on the same model, side by side, three seeds each, at SPEEDRUN_BUDGET seconds
# (about 40 min on the whole machine at 300 s; resumable: finished runs are skipped).
SPEEDRUN_BUDGET := 300
SEEDS := 0 1 2
SPEEDRUN = $(PY) train.py train.budget_s=$(SPEEDRUN_BUDGET) threads=2 "callbacks.time_to=[92,93,94]"
speedrun: setup
	@for seed in $(SEEDS); do for v in fmnist_speedrun budget_fmnist; do \
		d=runs/speedrun/$$v-$(SPEEDRUN_BUDGET)s-seed$$seed; test -f $$d/results.json && continue; \
		$(SPEEDRUN) experiment=$$v model=resnet20 seed=$$seed hydra.run.dir=$$d \
			$(call resume,$$d) || exit 1; \
	done; done
	$(PY) -m zoo.tools.seed_table runs/speedrun --time-to 92 93 94 --write docs/training.md --marker speedrun

# $(call ablate,DIR,NAME:OVERRIDE ...): the speedrun recipe with each override, three seeds each,
# seeds interleaved, finished runs skipped; then the seed table into docs/training.md under the
# marker named like DIR.
ablate = for seed in $(SEEDS); do for a in $(2); do \
		d=$(1)/$${a%%:*}-seed$$seed; test -f $$d/results.json && continue; \
		$(SPEEDRUN) experiment=fmnist_speedrun seed=$$seed $${a\#*:} hydra.run.dir=$$d \
			$(call resume,$$d) || exit 1; \
	done; done; \
	$(PY) -m zoo.tools.seed_table $(1) --time-to 92 93 94 --write docs/training.md --marker $(notdir $(1))

# The speedrun recipe with each piece removed in turn, and with batch 128 instead of 64
# (about 110 min on the whole machine at 300 s).
ABLATION := recipe: no_ema:callbacks.ema=false no_tta:train.tta=null \
	no_smoothing:train.label_smoothing=0.0 no_fast:train.fast=false batch128:data.batch_size=128 \
	no_whiten:callbacks.whiten=false
speedrun-ablation: setup
	@$(call ablate,runs/speedrun-ablation,$(ABLATION))

# The patch-whitening first convolution, side by side with the recipe without it (about 35 min at
# 300 s; docs/training.md#ablation).
speedrun-whiten: setup
	@$(call ablate,runs/speedrun-whiten,recipe:callbacks.whiten=false whiten:)

# Side-by-side benchmarks against torchvision/timm (docs/performance.md; about 30 min on 2 cores).
BENCH = $(PY) evaluate.py task=benchmark threads=2
bench: setup
	$(BENCH) against=torchvision output_dir=runs/bench/tv64 \
		"models=[alexnet,vgg16_bn,googlenet,resnet18,resnet50,densenet121]"
	$(BENCH) against=torchvision output_dir=runs/bench/fast32 "models=[resnet18,densenet121]" \
		"task.variants=[channels_last,fast]" "task.input_size=[3,32,32]" task.batch=64
	$(BENCH) against=torchvision output_dir=runs/bench/memeff "models=[densenet121]" \
		"task.variants=[memory_efficient]"
	$(BENCH) against=timm output_dir=runs/bench/timm64 \
		"models=[resnet18,resnet50,densenet121,vgg16_bn]"
	$(PY) -m zoo.bench.data_pipeline --out runs/bench/data_pipeline.json

# Time to accuracy (test top-1 after every epoch, seconds in results.json): LeNet-5 to 90 % with the
# default recipe (about 1 min), then ResNet-20 to 92 % and 94 % (experiment=resnet20_fmnist, 30 epochs,
# about 80 min on 2 cores).
time-to-accuracy: setup
	$(PY) train.py model=lenet5 data=fashion_mnist trainer=cpu threads=2 \
		callbacks.test_curve=true "callbacks.time_to=[88,89,90]" hydra.run.dir=runs/time_to_acc/lenet5
	$(PY) train.py experiment=resnet20_fmnist threads=2 hydra.run.dir=runs/time_to_acc/resnet20
