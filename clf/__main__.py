"""`python -m clf ...` (what torchrun launches: `torchrun --nproc-per-node 2 -m clf train ...`)."""

from clf.cli import app

if __name__ == "__main__":
    app()
