# Sourced by the scripts that use the one PyTorch virtual environment (made by
# scripts/setup-torch.sh): with $root the repository, sets target (Cargo's target
# directory, $CARGO_TARGET_DIR or target/, made absolute), venv (<target>/bench-venv)
# and python (its interpreter).
# shellcheck source=target.sh
. "$root/scripts/lib/target.sh"
venv="$target/bench-venv"
python="$venv/bin/python"
