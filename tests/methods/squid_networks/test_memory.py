import pytest
import torch

from squid_monai.methods.squid.networks import MemoryMatrix, MemoryQueue, gumbel_shrinkage


def _tokens(batch, regions, dim, start):
    """Token value = a running id, so FIFO order can be read back from the queue."""
    ids = torch.arange(start, start + batch, dtype=torch.float32)
    return ids[:, None, None].expand(batch, regions, dim).clone()


def test_queue_is_fifo_and_wraps_around():
    q = MemoryQueue(regions=2, slots=5, dim=3)
    q.enqueue(_tokens(3, 2, 3, start=1))  # ids 1, 2, 3
    assert q.pointer.item() == 3 and q.size.item() == 3
    assert q.memory[0, :3, 0].tolist() == [1, 2, 3]
    q.enqueue(_tokens(4, 2, 3, start=4))  # ids 4..7: 4, 5 fill the end, 6, 7 overwrite the oldest
    assert q.memory[0, :, 0].tolist() == [6, 7, 3, 4, 5]
    assert q.memory[1, :, 0].tolist() == [6, 7, 3, 4, 5]
    assert q.pointer.item() == 2 and q.size.item() == 5


def test_queue_keeps_only_the_newest_when_batch_exceeds_slots():
    q = MemoryQueue(regions=1, slots=4, dim=1)
    q.enqueue(_tokens(6, 1, 1, start=1))  # ids 1..6; the last four survive in FIFO positions
    assert q.pointer.item() == 6 % 4
    assert sorted(q.memory[0, :, 0].tolist()) == [3, 4, 5, 6]
    assert q.memory[0, (q.pointer.item() - 1) % 4, 0].item() == 6  # newest just behind the pointer


def test_shared_queue_takes_every_tile_in_batch_then_tile_order():
    q = MemoryQueue(regions=1, slots=8, dim=1)
    tokens = torch.arange(6, dtype=torch.float32).reshape(3, 2, 1)  # 3 images x 2 tiles
    q.enqueue(tokens)
    assert q.memory[0, :6, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_queue_state_survives_state_dict_round_trip_and_to():
    q = MemoryQueue(regions=4, slots=7, dim=5)
    q.enqueue(torch.randn(9, 4, 5))
    state = q.state_dict()
    assert {"memory", "pointer", "size"} <= set(state)
    fresh = MemoryQueue(regions=4, slots=7, dim=5)
    fresh.load_state_dict(state)
    assert fresh.pointer.item() == 9 % 7 and fresh.size.item() == 7
    assert torch.equal(fresh.memory, q.memory)
    fresh.enqueue(torch.ones(1, 4, 5))
    assert fresh.memory[:, 9 % 7].eq(1).all()  # the next write lands at the restored pointer
    moved = fresh.to(torch.float64)
    assert moved.memory.dtype == torch.float64 and moved.pointer.dtype == torch.long


def test_reading_gives_the_queue_no_gradient_but_the_query_one():
    q = MemoryQueue(regions=2, slots=6, dim=4, top_k=2)
    q.enqueue(torch.randn(6, 2, 4))
    query = torch.randn(3, 2, 4, requires_grad=True)
    q.read(query).sum().backward()
    assert not q.memory.requires_grad and q.memory.grad is None
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_tile_token_reads_only_its_own_region():
    regions, dim = 4, 3
    q = MemoryQueue(regions=regions, slots=5, dim=dim, top_k=5)
    # bank r holds only the value r + 1 in every slot
    q.enqueue(
        torch.arange(1, regions + 1, dtype=torch.float32)[None, :, None].expand(5, regions, dim)
    )
    out = q.read(torch.randn(2, regions, dim))
    for r in range(regions):
        assert torch.allclose(out[:, r], torch.full((2, dim), r + 1.0))


def test_shared_queue_is_read_by_all_regions():
    q = MemoryQueue(regions=1, slots=4, dim=2, top_k=1)
    q.enqueue(torch.tensor([[[10.0, 0.0], [0.0, 10.0]]]))  # one image, two tiles -> two entries
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # tile 0 matches entry 0, tile 1 entry 1
    out = q.read(query)
    assert torch.allclose(out[0, 0], torch.tensor([10.0, 0.0]))
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 10.0]))


def test_unwritten_slots_are_not_read():
    q = MemoryQueue(regions=1, slots=10, dim=2, top_k=3)
    assert q.read(torch.randn(2, 1, 2)).abs().sum() == 0  # empty queue -> nothing retrieved
    q.enqueue(torch.tensor([[[-1.0, -1.0]]]))  # the only entry is dissimilar to the query
    out = q.read(torch.tensor([[[5.0, 5.0]]]))
    assert torch.allclose(out, torch.tensor([[[-1.0, -1.0]]]))  # zero slots never win


@pytest.mark.parametrize("k", [1, 3, 5])
def test_gumbel_shrinkage_keeps_exactly_top_k_renormalised(k):
    logits = torch.randn(4, 3, 20)
    w = gumbel_shrinkage(logits, k)
    assert (w > 0).sum(-1).eq(k).all()
    assert torch.allclose(w.sum(-1), torch.ones(4, 3))
    soft = torch.softmax(logits, -1)
    top = soft.topk(k, -1)
    assert torch.equal(
        (w > 0), torch.zeros_like(w, dtype=torch.bool).scatter(-1, top.indices, True)
    )
    assert torch.allclose(w.gather(-1, top.indices), top.values / top.values.sum(-1, keepdim=True))


def test_gumbel_shrinkage_backward_is_the_softmax_gradient():
    logits = torch.randn(2, 16, requires_grad=True)
    upstream = torch.randn(2, 16)
    (gumbel_shrinkage(logits, 3) * upstream).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    (torch.softmax(ref, -1) * upstream).sum().backward()
    assert torch.allclose(logits.grad, ref.grad)
    assert (logits.grad != 0).all()  # every entry gets gradient, not only the top-k


def test_memory_matrix_is_learnt_and_not_written():
    m = MemoryMatrix(regions=2, items=8, dim=4, top_k=3)
    before = m.memory.detach().clone()
    m.enqueue(torch.randn(3, 2, 4))
    assert torch.equal(m.memory, before)
    m.read(torch.randn(3, 2, 4)).pow(2).sum().backward()
    assert m.memory.grad is not None and m.memory.grad.abs().sum() > 0


def test_nearest_distance_is_to_the_own_regions_nearest_written_item():
    queue = MemoryQueue(regions=2, slots=3, dim=2, top_k=1)
    queue.enqueue(
        torch.tensor([[[0.0, 0.0], [10.0, 10.0]], [[4.0, 0.0], [10.0, 14.0]]])
    )  # 2 of 3 slots
    query = torch.tensor([[[3.0, 0.0], [10.0, 11.0]]])
    # region 0 holds (0,0), (4,0): nearest (4,0), 1 / dim; region 1 holds (10,10), (10,14): 1 / dim
    torch.testing.assert_close(queue.nearest_distance(query), torch.tensor([[0.5, 0.5]]))
    # the unwritten third slot (zeros) is not an item: (0.1, 0) is nearest to (0, 0) in region 0 only
    torch.testing.assert_close(
        queue.nearest_distance(torch.tensor([[[0.1, 0.0], [1.0, 0.0]]])),
        torch.tensor([[0.005, (9.0**2 + 10.0**2) / 2]]),
    )
