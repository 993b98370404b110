import torch

from squid_monai.methods.squid.networks import InpaintingBlock, MaskedShortcut, NeighbourAttention


def test_masked_shortcut_is_active_in_training_only():
    shortcut = MaskedShortcut("hard", p=0.5)
    transformed, raw = torch.ones(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)
    mixed = shortcut.train()(transformed, raw)
    kept = mixed.eq(1).float().mean()
    assert 0.3 < kept < 0.7  # about p of the positions are in-painted in training
    assert mixed.eq(mixed[:, :1]).all()  # one decision per spatial position, all channels
    assert shortcut.eval()(transformed, raw).eq(1).all()  # 100 % in-painted at inference


def test_soft_and_no_shortcut():
    transformed, raw = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert torch.allclose(
        MaskedShortcut("soft", 0.95).train()(transformed, raw), torch.full_like(raw, 0.95)
    )
    assert MaskedShortcut("none", 0.5).train()(transformed, raw).eq(1).all()


def _block(**kw):
    args = dict(
        in_channels=16,
        spatial_size=2,
        token_channels=4,
        grid=3,
        slots=12,
        top_k=3,
        heads=2,
        mlp_dim=8,
    )
    args.update(kw)
    return InpaintingBlock(**args)


def test_inpainting_block_eval_output_ignores_the_shortcut():
    block = _block(mask_prob=0.5)
    x = torch.randn(2 * 9, 16, 2, 2)
    block.train()
    block(x)  # BN statistics
    block.enqueue(torch.randn(12, 9, 16))
    block.eval()
    y, tokens = block(x)
    block.shortcut.mode = "none"
    y_none, _ = block(x)
    assert torch.equal(y, y_none)
    assert tokens.shape == (2, 9, 16) and not tokens.requires_grad


def test_attention_reads_only_the_eight_neighbours():
    attn = NeighbourAttention(dim=8, heads=2, mlp_dim=8, grid=3).eval()
    query, retrieved = torch.randn(1, 9, 8), torch.randn(1, 9, 8)
    base = attn(query, retrieved)
    far = retrieved.clone()
    far[0, 8] += 10.0  # tile 8 (bottom right) is not a neighbour of tile 0 (top left)
    assert torch.allclose(attn(query, far)[0, 0], base[0, 0])
    near = retrieved.clone()
    near[0, 4] += 10.0  # the centre tile is a neighbour of tile 0
    assert not torch.allclose(attn(query, near)[0, 0], base[0, 0])


def test_out_of_grid_neighbours_masked_or_zero_tokens():
    torch.manual_seed(1)
    masked = NeighbourAttention(dim=8, heads=2, mlp_dim=8, grid=2, mask_out_of_grid=True).eval()
    zeros = NeighbourAttention(dim=8, heads=2, mlp_dim=8, grid=2, mask_out_of_grid=False).eval()
    zeros.load_state_dict(masked.state_dict())
    query, retrieved = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    # on a 2 x 2 grid every tile has 3 real and 5 out-of-grid neighbours: zero tokens change the result
    assert not torch.allclose(masked(query, retrieved), zeros(query, retrieved))
    one = NeighbourAttention(dim=8, heads=2, mlp_dim=8, grid=1).eval()  # no neighbour at all
    assert torch.isfinite(one(query[:, :1], retrieved[:, :1])).all()


def test_position_code_makes_tiles_distinguishable():
    block = _block(memory="matrix").eval()
    x = torch.zeros(9, 16, 2, 2)  # identical tiles
    y, _ = block(x)
    assert not torch.allclose(y[0], y[1])


def test_authors_padding_gives_out_of_grid_neighbours_the_projection_biases():
    """With mask_out_of_grid=False an out-of-grid neighbour is a zero *token*: after the
    biased projections its key and value are the biases (as in the authors' code)."""
    torch.manual_seed(2)
    attn = NeighbourAttention(dim=8, heads=2, mlp_dim=8, grid=2, mask_out_of_grid=False).eval()
    query, retrieved = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    out = attn(query, retrieved)
    # the same attention computed by hand from zero-padded tokens
    idx, valid = attn.neighbour_index, attn.neighbour_valid
    tokens = retrieved[:, idx] * valid[None, :, :, None]  # (1, 4, 8, D) zero tokens out of grid
    q = attn.q(query).reshape(1, 4, 2, 1, 4)
    k = attn.k(tokens).reshape(1, 4, 8, 2, 4).transpose(2, 3)
    v = attn.v(tokens).reshape(1, 4, 8, 2, 4).transpose(2, 3)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref = attn.out(ref.reshape(1, 4, 8))
    x = torch.relu(attn.norm1(ref) + retrieved)
    ref = torch.relu(attn.norm2(attn.mlp(x)) + x)
    assert torch.allclose(out, ref, atol=1e-5)
