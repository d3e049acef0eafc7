# Sourced at the start of every device command: installs the carried wheels, sets paths, prints the machine.
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export CKPT_DIR=${CKPT_DIR:-/root/ltx2-full} GEMMA_DIR=${GEMMA_DIR:-/dev/shm/gemma-full}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'av', av.__version__)"
df -h / /dev/shm | tail -2; free -g | head -2
