#!/usr/bin/env python3
"""The Python reference route, timed: transformers CLIPModel + the PIL CLIPImageProcessor.

Used by benches/compare.sh to run the reference and plip one after the other on the
same folder, model and thread count. Batching follows the PLIP repository's
`encode_images` (github.com/PathologyFoundation/plip, plip/plip.py): a torch
DataLoader over a Dataset that opens each image with PIL and runs the processor,
`get_image_features` per batch, embeddings L2-normalized at the end.

Modes (each prints one JSON line with its timings):
  images DIR   embed every image under DIR (the `plip index` work)
  text         embed a short and a 77-token prompt, warm latency
  pixels       image-embedding throughput on ready pixel tensors (model only),
               at batch 1, 8, 16 and 32, like `cargo bench --bench model`;
               --precision bf16 runs it under torch.autocast("cpu", dtype=torch.bfloat16)
               (torch's own mixed precision: bf16 matmuls, f32 norms and softmax),
               and `f32,bf16` both, alternating per batch size
  search Q     the whole "search" route: import torch, load the model, embed Q,
               dot with a saved embedding matrix (--matrix .npy), print top 10
"""
import argparse
import json
import os
import sys
import time

T0 = time.perf_counter()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["images", "text", "pixels", "search"])
    ap.add_argument("arg", nargs="?")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (PLIP uses 1)")
    ap.add_argument("--matrix", help="embeddings .npy for search mode")
    ap.add_argument("--batches", default="1,8,16,32", help="pixels mode: batch sizes")
    ap.add_argument("--runs", type=int, help="pixels mode: timed runs per batch size (default 64/batch, at least 2)")
    ap.add_argument("--precision", default="f32", help="pixels mode: f32, bf16 (torch.autocast) or f32,bf16")
    a = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPTokenizerFast
    try:  # transformers >= 5: the PIL processor has its own class
        from transformers import CLIPImageProcessorPil as Proc
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as Proc
    torch.set_num_threads(a.threads)
    t_import = time.perf_counter() - T0

    t = time.perf_counter()
    model = CLIPModel.from_pretrained(a.model).eval()
    t_load = time.perf_counter() - t
    out = {"mode": a.mode, "threads": a.threads, "import_s": t_import, "load_s": t_load}

    if a.mode == "images":
        proc = Proc.from_pretrained(a.model)
        exts = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
        paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.arg) for f in fs if f.lower().endswith(exts))

        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return len(paths)

            def __getitem__(self, i):
                with Image.open(paths[i]) as im:
                    return proc(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]

        dl = torch.utils.data.DataLoader(DS(), batch_size=a.batch_size, num_workers=a.workers)
        t = time.perf_counter()
        embs = []
        with torch.no_grad():
            for pv in dl:
                f = model.get_image_features(pixel_values=pv)
                f = getattr(f, "pooler_output", f)
                embs.append(torch.nn.functional.normalize(f, dim=-1))
        dt = time.perf_counter() - t
        out.update(images=len(paths), embed_s=dt, images_per_s=len(paths) / dt)
    elif a.mode == "pixels":
        import contextlib
        precisions = [p.strip() for p in a.precision.split(",")]
        if any(p not in ("f32", "bf16") for p in precisions):
            sys.exit(f"--precision: {a.precision!r}: use f32, bf16 or f32,bf16")

        def context(p):
            if p == "bf16":
                return torch.autocast("cpu", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        res = {p: {} for p in precisions}
        with torch.no_grad():
            for b in [int(x) for x in a.batches.split(",")]:
                pv = torch.randn(b, 3, 224, 224)
                for p in precisions:
                    with context(p):
                        model.get_image_features(pixel_values=pv)
                        runs = a.runs or max(2, 64 // b)
                        ts = []
                        for _ in range(runs):
                            t = time.perf_counter()
                            model.get_image_features(pixel_values=pv)
                            ts.append(time.perf_counter() - t)
                    res[p][f"batch {b}"] = b / sorted(ts)[len(ts) // 2]
        # f32 under its historical key; other precisions as images_per_s_<p>
        for p in precisions:
            out["images_per_s" if p == "f32" else f"images_per_s_{p}"] = res[p]
    elif a.mode == "text":
        tok = CLIPTokenizerFast.from_pretrained(a.model)
        res = {}
        for name, p in [("short", "tumor tissue"), ("77 tokens", "cell " * 100)]:
            ids = tok([p], truncation=True, max_length=77, return_tensors="pt")
            with torch.no_grad():
                for _ in range(3):
                    model.get_text_features(**ids)
                ts = []
                for _ in range(20):
                    t = time.perf_counter()
                    model.get_text_features(**ids)
                    ts.append(time.perf_counter() - t)
            res[name] = {"tokens": int(ids["input_ids"].shape[1]), "median_ms": 1e3 * sorted(ts)[len(ts) // 2]}
        out["text"] = res
    else:
        tok = CLIPTokenizerFast.from_pretrained(a.model)
        m = np.load(a.matrix, mmap_mode="r")
        ids = tok([a.arg], truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            q = model.get_text_features(**ids)
            q = getattr(q, "pooler_output", q)
            q = torch.nn.functional.normalize(q, dim=-1)[0].numpy()
        s = m @ q
        top = np.argsort(-s)[:10]
        print("\n".join(f"{i} {s[i]:.4f}" for i in top), file=sys.stderr)
    out["total_s"] = time.perf_counter() - T0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
