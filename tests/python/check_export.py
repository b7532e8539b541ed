"""Reads a `plip export` folder with the tools it is meant for, and checks it.

Usage: python check_export.py EXPORT_DIR QUERY_JSONL SEARCH_JSONL

* pandas/pyarrow read every metadata part; rows match the npy parts;
* clip-retrieval's embedding_reader (format parquet_npy) reads embeddings and
  image_path together, aligned;
* FAISS builds an exact inner-product index from the npy files, and its top
  hits for the query (from `plip embed --text ... --jsonl`) are `plip search`'s
  (SEARCH_JSONL, from `plip search --json`): same paths, scores to 1e-5.

Needs: numpy pandas pyarrow embedding-reader faiss-cpu (not run by CI).
"""
import glob
import json
import os
import sys

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from embedding_reader import EmbeddingReader

out, query_jsonl, search_jsonl = sys.argv[1:4]
npys = sorted(glob.glob(os.path.join(out, "img_emb", "img_emb_*.npy")))
parquets = sorted(glob.glob(os.path.join(out, "metadata", "metadata_*.parquet")))
assert npys and len(npys) == len(parquets), (npys, parquets)

embs, paths = [], []
for n, p in zip(npys, parquets):
    e = np.load(n)
    assert e.dtype == np.float32 and e.ndim == 2, (n, e.dtype, e.shape)
    assert e.shape[0] <= 1_000_000
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5), n
    df = pd.read_parquet(p)
    assert list(df.columns)[0] == "image_path", df.columns
    assert len(df) == e.shape[0] == pq.ParquetFile(p).metadata.num_rows, (p, len(df), e.shape)
    embs.append(e)
    paths.extend(df["image_path"].tolist())
emb = np.concatenate(embs)
print(f"pandas/pyarrow: {len(npys)} parts, {emb.shape[0]} rows x {emb.shape[1]}")

reader = EmbeddingReader(
    embeddings_folder=os.path.join(out, "img_emb"),
    metadata_folder=os.path.join(out, "metadata"),
    meta_columns=["image_path"],
    file_format="parquet_npy",
)
assert reader.count == emb.shape[0] and reader.dimension == emb.shape[1]
got = {}
for batch, meta in reader(batch_size=4, start=0, end=reader.count):
    for v, p in zip(batch, meta["image_path"]):
        got[p] = v
assert len(got) == len(paths)
for v, p in zip(emb, paths):
    assert np.allclose(got[p], v), p
print(f"embedding_reader parquet_npy: {reader.count} rows, aligned")

index = faiss.IndexFlatIP(emb.shape[1])
index.add(emb)
query = np.array([json.loads(l)["embedding"] for l in open(query_jsonl)], dtype=np.float32)
expected = [json.loads(l) for l in open(search_jsonl)]
scores, ids = index.search(query[:1], len(expected))
for (s, i, e) in zip(scores[0], ids[0], expected):
    assert paths[i].endswith(e["path"].lstrip("./")), (paths[i], e["path"])
    assert abs(s - e["score"]) < 1e-5, (s, e["score"])
print(f"faiss IndexFlatIP: top {len(expected)} equal plip search (scores to 1e-5)")
print("export OK")
