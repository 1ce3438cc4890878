"""The listwise-against-pairwise benchmark's split: disjoint prompts, K = 4 rankings, best-vs-worst pairs."""

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "listwise_vs_pairwise_qa.py"




def test_split_holds_out_the_last_100_rankings_and_pairs_best_with_worst(tmp_path, shared_data, load_benchmark):
    files = load_benchmark("listwise_vs_pairwise_qa").write_split(tmp_path)
    read = {name: [json.loads(x) for x in path.read_text().splitlines()] for name, path in files.items()}
    assert len(read["test"]) == 100 and len(read["ranked"]) == len(read["pairs"]) == 388  # 488 with a preference
    assert not {r["prompt"] for r in read["test"]} & {r["prompt"] for r in read["ranked"]}
    for ranked, pair in zip(read["ranked"], read["pairs"]):
        assert len(ranked["responses"]) == 4 and pair["prompt"] == ranked["prompt"]
        scores = ranked["scores"]
        best = ranked["responses"][scores.index(max(scores))]  # first of the tied best, as max() picks
        worst = ranked["responses"][scores.index(min(scores))]
        assert (pair["chosen"], pair["rejected"]) == (best, worst)
