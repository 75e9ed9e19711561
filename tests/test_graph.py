"""Chapter 6's graph machinery: the mesh's graph, its Laplacian, Chebyshev convolution, coarsening."""
import pytest
import torch

from handlib.mano.layer import ManoLayer
from handlib.models import graph
from handlib.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def hand_faces():
    return ManoLayer().faces


def grid_faces(rows=4, columns=5):
    """A flat (rows x columns)-vertex grid cut into triangles: a small mesh with a boundary."""
    faces = []
    for r in range(rows - 1):
        for c in range(columns - 1):
            a, b, d, e = r * columns + c, r * columns + c + 1, (r + 1) * columns + c, (r + 1) * columns + c + 1
            faces += [[a, b, d], [b, e, d]]
    return torch.tensor(faces)


# ---------------------------------------------------------------- the graph and its Laplacian

def test_edges_and_adjacency_of_a_small_grid():
    faces = grid_faces(3, 3)                      # 9 vertices, 8 triangles
    edges = graph.mesh_edges(faces)
    # 2 x 3 horizontal + 3 x 2 vertical + 4 diagonals, each once
    assert len(edges) == 16 and bool((edges[:, 0] < edges[:, 1]).all())
    A = graph.adjacency(faces, 9)
    assert torch.equal(A, A.T) and A.diagonal().abs().sum() == 0 and A.sum() == 32
    assert A[4].sum() == 6                         # the centre vertex has six neighbours


def test_the_rescaled_laplacian_spectrum_is_minus_one_to_one(hand_faces):
    L = graph.normalized_laplacian(graph.adjacency(hand_faces, 778))
    eigenvalues = torch.linalg.eigvalsh(L.double())
    assert eigenvalues.min() > -1e-6 and eigenvalues.max() <= 2 + 1e-6      # the normalised Laplacian's range
    assert abs(float(eigenvalues.min())) < 1e-6                            # a connected graph: one zero eigenvalue
    rescaled = torch.linalg.eigvalsh(graph.rescaled_laplacian(L).double())
    assert rescaled.min() == pytest.approx(-1.0, abs=1e-5) and rescaled.max() == pytest.approx(1.0, abs=1e-5)


def test_every_level_of_the_hierarchy_has_a_rescaled_spectrum(hand_faces):
    for level in graph.coarsen(hand_faces, 778, 4, seed=0):
        eigenvalues = torch.linalg.eigvalsh(level.laplacian.double())
        assert eigenvalues.min() >= -1 - 1e-5 and eigenvalues.max() <= 1 + 1e-5


# ---------------------------------------------------------------- Chebyshev convolution

def dense_reference(L: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """y = sum_k T_k(L) x W_k + b with T_k(L) built independently: T_k(cos t) = cos(k t) on the eigenvalues."""
    eigenvalues, vectors = torch.linalg.eigh(L.double())
    angles = torch.arccos(eigenvalues.clamp(-1, 1))
    y = 0
    for k in range(weight.shape[0]):
        T_k = vectors @ torch.diag(torch.cos(k * angles)) @ vectors.T                   # T_k(L), (V, V)
        y = y + torch.einsum("uv,bvi,io->buo", T_k, x.double(), weight[k].double())
    return y + bias.double()


@pytest.mark.parametrize("dense", [True, False])
def test_chebyshev_convolution_equals_the_dense_polynomial(dense):
    faces = grid_faces(4, 5)
    L = graph.rescaled_laplacian(graph.normalized_laplacian(graph.adjacency(faces, 20)))
    torch.manual_seed(0)
    conv = graph.ChebConv(L, 4, 6, order=3, dense=dense)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 20, 4)
    expected = dense_reference(L, x, conv.weight.detach(), conv.bias.detach())
    torch.testing.assert_close(conv(x).double(), expected, atol=1e-5, rtol=1e-5)


def test_the_recursion_equals_explicit_powers_on_the_hand(hand_faces):
    """x_2 = 2 L~ x_1 - x_0 = (2 L~^2 - I) x, with the hand's (sparse) Laplacian."""
    level = graph.coarsen(hand_faces, 778, 0)[0]
    L = level.laplacian.double()
    x = torch.randn(3, 778, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    terms = graph.chebyshev_basis(L.to_sparse_coo(), x, 3)
    torch.testing.assert_close(terms[1], torch.einsum("uv,bvf->buf", L, x))
    torch.testing.assert_close(terms[2], torch.einsum("uv,bvf->buf", 2 * L @ L - torch.eye(778, dtype=L.dtype), x))


def test_a_chebyshev_filter_reaches_k_minus_one_edges():
    """An impulse at one vertex spreads over the vertices within K - 1 edges, and no further."""
    faces = grid_faces(1 + 6, 2)                   # a strip: vertex i's row is i // 2
    L = graph.rescaled_laplacian(graph.normalized_laplacian(graph.adjacency(faces, 14)))
    x = torch.zeros(1, 14, 1)
    x[0, 0] = 1.0
    reached = graph.chebyshev_basis(L, x, 3).abs().sum(0)[0, :, 0] > 1e-9
    A = graph.adjacency(faces, 14)
    within_two = ((torch.eye(14) + A) @ (torch.eye(14) + A))[0] > 0
    assert torch.equal(reached, within_two)


def test_bad_inputs_say_what_was_expected():
    L = torch.eye(5)
    with pytest.raises(ValueError, match=r"x: expected a signal of shape \(B, 5, F\).*got \(2, 4, 3\)"):
        graph.chebyshev_basis(L, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"laplacian: expected a square"):
        graph.chebyshev_basis(torch.zeros(5, 4), torch.zeros(1, 5, 1))
    with pytest.raises(ValueError, match=r"weight: expected shape \(K, 3, F_out\)"):
        graph.chebyshev_conv(torch.zeros(1, 5, 3), L, torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match=r"faces: expected an integer tensor of shape \(F, 3\)"):
        graph.mesh_edges(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"faces: expected vertex indices in \[0, 3\)"):
        graph.adjacency(torch.tensor([[0, 1, 5]]), 3)


# ---------------------------------------------------------------- coarsening, pooling, upsampling

def test_coarsening_pools_every_vertex_exactly_once(hand_faces):
    hierarchy = graph.coarsen(hand_faces, 778, 4, seed=0)
    sizes = [level.num_vertices for level in hierarchy]
    assert sizes[0] == 778 and len(sizes) == 5
    for fine, coarse in zip(hierarchy[:-1], hierarchy[1:]):
        parent = fine.parent
        assert parent.shape == (fine.num_vertices,)                            # each vertex has one parent
        children = torch.bincount(parent, minlength=coarse.num_vertices)
        assert children.min() >= 1 and children.max() <= 2                     # pairs or singles, none empty
        assert int(children.sum()) == fine.num_vertices                         # every vertex pooled once
        # matching roughly halves the graph: between half and 55 % (the singles) of the vertices
        assert fine.num_vertices / 2 <= coarse.num_vertices <= 0.55 * fine.num_vertices
        # paired vertices are neighbours on the fine graph
        for c in (children == 2).nonzero()[:50, 0].tolist():
            i, j = (parent == c).nonzero()[:, 0].tolist()
            assert fine.adjacency[i, j] > 0
    assert hierarchy[-1].parent is None
    assert sizes == [level.num_vertices for level in graph.coarsen(hand_faces, 778, 4, seed=0)]   # seeded


def test_coarse_graphs_join_the_clusters_that_touch():
    faces = grid_faces(3, 4)
    A = graph.adjacency(faces, 12)
    parent = graph.heavy_edge_matching(A, torch.Generator().manual_seed(0))
    coarse = graph.coarsen_adjacency(A, parent)
    assert coarse.diagonal().abs().sum() == 0
    for a in range(len(coarse)):
        for b in range(len(coarse)):
            touching = A[parent == a][:, parent == b].sum()
            assert coarse[a, b] == (touching if a != b else 0)


def test_pooling_and_upsampling():
    parent = torch.tensor([0, 0, 1, 2, 2, 1])
    x = torch.tensor([[1.0], [5.0], [2.0], [-1.0], [-3.0], [4.0]])[None]       # (1, 6, 1)
    assert graph.pool(x, parent)[0, :, 0].tolist() == [5.0, 4.0, -1.0]
    assert graph.pool(x, parent, "mean")[0, :, 0].tolist() == [3.0, 3.0, -2.0]
    up = graph.upsample(torch.tensor([[[7.0], [8.0], [9.0]]]), parent)
    assert up[0, :, 0].tolist() == [7.0, 7.0, 8.0, 9.0, 9.0, 8.0]
    with pytest.raises(ValueError, match=r"x: expected a signal of shape \(B, 6, F\)"):
        graph.pool(torch.zeros(1, 5, 1), parent)


def test_laplacian_coordinates_vanish_on_a_flat_interior():
    faces = grid_faces(3, 3)
    xs, ys = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    vertices = torch.stack([ys.flatten(), xs.flatten(), torch.zeros(9)], -1)[None]   # a flat regular grid
    delta = graph.laplacian_coordinates(vertices, graph.adjacency(faces, 9))
    assert delta[0, 4].abs().max() < 1e-6            # the centre is the mean of its six neighbours
    assert delta[0, 0].abs().max() > 0.1              # a corner is not
