"""A minimal Accelerate training loop over a toy model, used by the checkpointing tests as a real subprocess.

Usage: python toy_train.py OUTPUT_DIR TOTAL_STEPS [--resume]
Checkpoints after every step (keeping 2); writes final_state.pt with parameters and optimizer state at the end.
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from modeling_mambavl.training import checkpointing, faults


def main() -> None:
    out, total = Path(sys.argv[1]), int(sys.argv[2])
    resume = "--resume" in sys.argv
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    step = 0
    if resume:
        folder = checkpointing.resolve_resume_checkpoint(out, "latest")
        if folder is not None:
            step = checkpointing.load_checkpoint(accelerator, folder)["global_step"]
    while step < total:
        step += 1
        g = torch.Generator().manual_seed(step)  # the data of a step depends on the step alone
        x = torch.randn(32, 8, generator=g)
        y = x.sum(-1, keepdim=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        faults.kill_point("after_step", step)
        checkpointing.save_checkpoint(accelerator, out, step, {"epoch": 0}, {"note": "toy"}, total_limit=2)
    torch.save({"params": [p.detach().clone() for p in model.parameters()],
                "optimizer": optimizer.state_dict()}, out / "final_state.pt")


if __name__ == "__main__":
    main()
