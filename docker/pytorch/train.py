"""A minimal data-parallel job over files in the lake: every rank reads its share of the files
under --data (plain POSIX reads through the mount, cached on the node's SSD after the first
epoch) and rank 0 writes a checkpoint to the task's output directory."""

import argparse
import hashlib
import os
import pathlib

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class LakeFiles(Dataset):
    def __init__(self, root):
        self.files = sorted(p for p in pathlib.Path(root).rglob("*") if p.is_file())

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        data = self.files[i].read_bytes()
        digest = hashlib.sha256(data).digest()
        return torch.tensor(list(digest[:8]), dtype=torch.float32), len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.environ.get("LAKE", "/mnt/lake"), "train"))
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dataset = LakeFiles(args.data)
    loader = DataLoader(dataset, batch_size=32, num_workers=8,
                        sampler=DistributedSampler(dataset), collate_fn=list)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Linear(8, 1).to(device),
        device_ids=[local_rank] if device.type == "cuda" else None,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    total = 0
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            total += sum(size for _, size in batch)
            x = torch.stack([features for features, _ in batch]).to(device)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(f"rank {rank}: read {total} bytes from {args.data}")
    if rank == 0:
        out = pathlib.Path(os.environ.get("LAKE_AGENT_OUTPUT_DIR", "/mnt/output"))
        torch.save(model.module.state_dict(), out / "model.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
