"""A bounded fuzz of the file readers (fixed seed, about 30 s): every mutated IDX, CIFAR batch,
PNG, set file, checkpoint and expert shard is either read or refused with the package's own
error. The longer run of the same harness is benchmarks/fuzz.py (counts in README)."""
import pytest

import fuzzing

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mutated_files_fail_only_with_the_packages_errors(tmp_path):
    tally = fuzzing.run(tmp_path, seed=17, per_target=400)
    assert sum(tally.inputs.values()) == 2400
    assert all(tally.refused[t] > 0 for t in tally.inputs)  # the mutations do reach the readers' checks
    assert not tally.foreign, f"{fuzzing.summary(tally)}; first findings: {tally.findings}"


def test_the_mutations_are_reproducible(tmp_path):
    import random

    a = [fuzzing.mutate(b"header {\"n\": 12} payload", random.Random(3)) for _ in range(3)]
    b = [fuzzing.mutate(b"header {\"n\": 12} payload", random.Random(3)) for _ in range(3)]
    assert a == b and any(x != b"header {\"n\": 12} payload" for x in a)
