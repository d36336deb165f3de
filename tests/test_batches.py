from evalsvc.sampling.runner import batch_lengths


def test_batches_are_as_few_as_allowed_and_nearly_equal():
    assert batch_lengths(48, 24) == [24, 24]
    assert batch_lengths(50, 24) == [17, 17, 16]
    assert batch_lengths(5, 8) == [5]
    assert batch_lengths(0, 8) == []
    for count in range(1, 70):
        for size in range(1, 30):
            lengths = batch_lengths(count, size)
            assert sum(lengths) == count and max(lengths) <= size
            assert len(lengths) == -(-count // size) and max(lengths) - min(lengths) <= 1
