"""Started twice by tests/train/test_distributed.py through torch.distributed.run (gloo, CPU).

Each rank trains the same tiny run through the library code train.py uses, then writes its own
final state dict, so the test can check that the two processes ended with identical weights.
"""
import sys
from pathlib import Path

import torch

from utils.train import distributed as dist_utils
from utils.train.trainer import TrainConfig, Trainer


def main(data: str, run: str, out: str) -> None:
    torch.set_num_threads(1)
    info = dist_utils.setup('cpu')
    cfg = TrainConfig(model='spikerain-tiny', train_dir=f'{data}/train', val_dir=f'{data}/test',
                      model_save_dir=run, batch_size=1, patch_size=16, iters=3, warmup='1',
                      val_every='0', save_every='2', workers=0, tensorboard=False)
    try:
        trainer = Trainer(cfg, info)
        trainer.fit()
        torch.save(trainer.net.state_dict(), Path(out) / f'rank{info.rank}.pt')
    finally:
        dist_utils.cleanup()


if __name__ == '__main__':
    main(*sys.argv[1:4])
