# Sourced at the start of every device command: installs the carried wheels, sets paths, prints the machine.
# A follow-up call on a box still warm from the last one carries other files instead: it keeps what that one installed.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
elif [ ! -d /tmp/site/ltx_core ]; then
  echo "no wheels carried and none installed on this box: carry .whl"; exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export CKPT_DIR=${CKPT_DIR:-/root/ltx2-full} GEMMA_DIR=${GEMMA_DIR:-/dev/shm/gemma-full}
nvidia-smi --query-gpu=name,uuid,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'av', av.__version__)"
df -h / /dev/shm | tail -2; free -g | head -2
