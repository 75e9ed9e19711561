"""The hand mesh as a graph, its coarsening, and Chebyshev graph convolution (chapter 6).

A mesh is a graph: its V vertices are the nodes, the edges of its triangles the edges. A signal on
the graph is one feature vector per vertex, x of shape (V, F) (for a batch (B, V, F)). Ge et al.
(CVPR 2019) generate the hand's mesh with convolutions *on this graph* (Defferrard, Bresson &
Vandergheynst, NeurIPS 2016, "ChebNet"), step by step, each a function below:

1. ``mesh_edges``, ``adjacency``: the graph of a triangle mesh, A_ij = 1 when i and j share an edge.
2. ``normalized_laplacian``:  L = I - D^{-1/2} A D^{-1/2}, D = diag(degrees). Its eigenvalues lie
   in [0, 2]; its eigenvectors are the graph's "Fourier modes" (smooth to oscillating on the hand).
3. ``rescaled_laplacian``:     L~ = 2 L / lambda_max - I, eigenvalues in [-1, 1], where the
   Chebyshev polynomials T_k are bounded by 1.
4. ``chebyshev_basis``:        x_0 = x,  x_1 = L~ x,  x_k = 2 L~ x_{k-1} - x_{k-2}   (T_k(L~) x)
5. ``chebyshev_conv``:         y = sum_{k<K} x_k W_k + b: a filter that is a polynomial of degree
   K - 1 in L~, so each output vertex sees the vertices within K - 1 edges (K = 3 as in the paper).
6. ``coarsen``: a hierarchy of ever smaller graphs by heavy-edge matching (Defferrard et al.,
   after Graclus / METIS): each vertex is paired with the unmatched neighbour that maximises the
   normalised-cut weight w_ij (1/d_i + 1/d_j), or stays alone; pairs become one vertex of the next
   level. ``pool`` and ``upsample`` move signals between levels.

Our coarsening keeps the *assignment* of every vertex to its coarse vertex (``GraphLevel.parent``)
instead of Defferrard's padded binary tree with "fake" nodes: the released code of Ge et al. pads
to 1280 / 640 / 320 / 160 / 80 nodes so that pooling is a 1D max-pool of size 2 over a permuted
signal. With assignments, pooling is a scatter (max or mean over each coarse vertex's one or two
children) and upsampling a gather (each child copies its parent), exact for any level size, and
no padded node needs masking. The sizes are what the matching gives (below).

Dense or sparse L~? For the hand (778 vertices, 2315 edges, 5408 nonzeros in L~), forward + backward
of a K = 3 convolution with B = 16 on one (shared) CPU core: 64 -> 64 features 79 ms dense, 26 ms
sparse; 32 -> 32: 35 ms and 10 ms. ``ChebConv`` holds L~ sparse (COO) by default; ``dense=True``
keeps the dense matrix (what a student reads most easily; on a GPU either is fast).

On the hand (``coarsen(faces, 778, 4, seed=0)``) the levels have 778, 411, 223, 118 and 63 vertices:
about half at each level, plus the vertices whose neighbours were all taken before them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_ORDER = 3  # K: Chebyshev terms T_0 .. T_{K-1} (Ge et al.'s K = 3)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _check_faces(faces, num_vertices: int | None = None) -> torch.Tensor:
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        got = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces: expected an integer tensor of shape (F, 3), got {got}")
    if num_vertices is not None and faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ValueError(f"faces: expected vertex indices in [0, {num_vertices}) (num_vertices), got indices from "
                         f"{int(faces.min())} to {int(faces.max())}")
    return faces.long()


def _check_square(name: str, matrix) -> None:
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        got = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"{name}: expected a square (V, V) matrix, got {got}")


def _check_signal(x, num_vertices: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != num_vertices:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a signal of shape (B, {num_vertices}, F) on the graph's "
                         f"{num_vertices} vertices, got {got}")


# --------------------------------------------------------------------------------------------
# 1-3. The graph and its Laplacian
# --------------------------------------------------------------------------------------------

def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """The undirected edges of a triangle mesh, each once.

    Args:
        faces: (F, 3) integer vertex indices.

    Returns:
        (E, 2) long, i < j, sorted.
    """
    faces = _check_faces(faces)
    pairs = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])       # (3F, 2) every triangle side
    pairs = torch.sort(pairs, dim=1).values                                             # (3F, 2) i < j
    return torch.unique(pairs, dim=0)                                                   # (E, 2) shared sides once


def adjacency(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """A_ij = 1 where vertices i and j share a triangle's edge, 0 elsewhere (and on the diagonal).

    Args:
        faces: (F, 3) integer vertex indices in [0, num_vertices).
        num_vertices: V.

    Returns:
        (V, V) float32, symmetric.
    """
    edges = mesh_edges(_check_faces(faces, num_vertices))
    matrix = torch.zeros(num_vertices, num_vertices)
    matrix[edges[:, 0], edges[:, 1]] = 1.0
    matrix[edges[:, 1], edges[:, 0]] = 1.0
    return matrix


def normalized_laplacian(adjacency_matrix: torch.Tensor) -> torch.Tensor:
    """L = I - D^{-1/2} A D^{-1/2} (Defferrard et al. Eq. 1, normalised form).

    An isolated vertex (degree 0) gets L_ii = 1 and no neighbours.

    Args:
        adjacency_matrix: (V, V) symmetric, non-negative weights.

    Returns:
        (V, V) symmetric, eigenvalues in [0, 2].
    """
    _check_square("adjacency_matrix", adjacency_matrix)
    degree = adjacency_matrix.sum(1)                                                    # (V,)
    inverse_sqrt = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
    normalized = inverse_sqrt[:, None] * adjacency_matrix * inverse_sqrt[None, :]       # D^-1/2 A D^-1/2
    return torch.eye(len(degree), dtype=adjacency_matrix.dtype) - normalized


def rescaled_laplacian(laplacian: torch.Tensor, lambda_max: float | None = None) -> torch.Tensor:
    """L~ = 2 L / lambda_max - I: the spectrum moved from [0, lambda_max] to [-1, 1].

    (Ge et al.'s released code computes L / (2 lambda_max) - I while its comment says the formula
    above; the formula above is Defferrard et al.'s, and the one whose spectrum is [-1, 1].)

    Args:
        laplacian: (V, V) symmetric, from ``normalized_laplacian``.
        lambda_max: its largest eigenvalue; None computes it (``torch.linalg.eigvalsh``, float64).

    Returns:
        (V, V), same dtype as ``laplacian``.
    """
    _check_square("laplacian", laplacian)
    if lambda_max is None:
        lambda_max = float(torch.linalg.eigvalsh(laplacian.double())[-1])
    if not lambda_max > 0:
        raise ValueError(f"lambda_max: expected the Laplacian's largest eigenvalue (> 0), got {lambda_max}; a graph "
                         "without edges has no spectrum to rescale")
    return 2.0 * laplacian / lambda_max - torch.eye(len(laplacian), dtype=laplacian.dtype)


# --------------------------------------------------------------------------------------------
# 4-5. Chebyshev convolution
# --------------------------------------------------------------------------------------------

def _apply(laplacian: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L~ x for a batch of signals x (B, V, F), with L~ dense or sparse (V, V): one (V, V) @ (V, B F)."""
    batch, vertices, features = x.shape
    flat = x.transpose(0, 1).reshape(vertices, batch * features)                        # (V, B F)
    product = torch.sparse.mm(laplacian, flat) if laplacian.is_sparse else laplacian @ flat
    return product.reshape(vertices, batch, features).transpose(0, 1)                   # (B, V, F)


def chebyshev_basis(laplacian: torch.Tensor, x: torch.Tensor, order: int = DEFAULT_ORDER) -> torch.Tensor:
    """The Chebyshev terms T_k(L~) x, k = 0 .. order - 1, by the recursion (Defferrard et al. Eq. 4)

        x_0 = x,   x_1 = L~ x,   x_k = 2 L~ x_{k-1} - x_{k-2}.

    Args:
        laplacian: (V, V) the rescaled Laplacian L~, dense or sparse COO.
        x: (B, V, F) a signal on the graph.
        order: K >= 1, the number of terms.

    Returns:
        (K, B, V, F).
    """
    _check_square("laplacian", laplacian)
    _check_signal(x, laplacian.shape[0])
    if order < 1:
        raise ValueError(f"order: expected K >= 1 Chebyshev terms, got {order}")
    terms = [x]                                                                         # x_0 = x
    if order > 1:
        terms.append(_apply(laplacian, x))                                              # x_1 = L~ x
    for _ in range(2, order):
        terms.append(2.0 * _apply(laplacian, terms[-1]) - terms[-2])                    # x_k = 2 L~ x_{k-1} - x_{k-2}
    return torch.stack(terms)


def chebyshev_conv(x: torch.Tensor, laplacian: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = sum_k T_k(L~) x W_k + b: Chebyshev graph convolution (Defferrard et al. Eq. 4).

    Args:
        x: (B, V, F_in) a signal on the graph.
        laplacian: (V, V) the rescaled Laplacian L~, dense or sparse.
        weight: (K, F_in, F_out) one matrix per Chebyshev term.
        bias: (F_out,) or None.

    Returns:
        (B, V, F_out).
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim != 3 or weight.shape[1] != x.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight: expected shape (K, {x.shape[-1]}, F_out) for x with {x.shape[-1]} features, "
                         f"got {got}")
    terms = chebyshev_basis(laplacian, x, weight.shape[0])                              # (K, B, V, F_in)
    y = torch.einsum("kbvi,kio->bvo", terms, weight)                                    # (B, V, F_out)
    return y if bias is None else y + bias


class ChebConv(nn.Module):
    """Chebyshev graph convolution on one fixed graph: ``chebyshev_conv`` with learned W and b.

    Args:
        laplacian: (V, V) the rescaled Laplacian L~ (``rescaled_laplacian``), held as a buffer.
        in_features, out_features: F_in and F_out.
        order: K, the number of Chebyshev terms (3: each vertex sees 2 edges around it).
        dense: keep L~ dense; False (default) stores it sparse (faster on the CPU, see the module docs).

    Input (B, V, F_in), output (B, V, F_out).
    """

    def __init__(self, laplacian: torch.Tensor, in_features: int, out_features: int, order: int = DEFAULT_ORDER,
                 dense: bool = False):
        super().__init__()
        _check_square("laplacian", laplacian)
        self.order, self.in_features, self.out_features = order, in_features, out_features
        laplacian = laplacian.float()
        self.register_buffer("laplacian", laplacian if dense else laplacian.to_sparse_coo().coalesce(),
                             persistent=False)
        self.weight = nn.Parameter(torch.empty(order, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        # Glorot over the K stacked terms, as a Linear(K F_in, F_out) would be.
        bound = (6.0 / (order * in_features + out_features)) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)

    @property
    def num_vertices(self) -> int:
        return self.laplacian.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_signal(x, self.num_vertices)
        return chebyshev_conv(x, self.laplacian, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, order={self.order}, vertices={self.num_vertices}, "
                f"sparse={self.laplacian.is_sparse}")


# --------------------------------------------------------------------------------------------
# 6. Coarsening, pooling, upsampling
# --------------------------------------------------------------------------------------------

def heavy_edge_matching(adjacency_matrix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One level of Defferrard et al.'s coarsening: pair vertices along heavy edges.

    Vertices are visited in a random order (drawn from ``generator``); an unmatched vertex i is
    paired with its unmatched neighbour j of largest normalised-cut weight

        w_ij (1 / d_i + 1 / d_j),        d = weighted degrees,

    or, when all its neighbours are taken, stays alone. Each pair (or single) is one coarse vertex.

    Args:
        adjacency_matrix: (V, V) symmetric, non-negative weights.
        generator: the visiting order's randomness (None: torch's global generator).

    Returns:
        (V,) long, ``parent[i]``: the coarse vertex of fine vertex i, numbered 0 .. V' - 1 in the
        order the coarse vertices were made. Each coarse vertex has one or two children.
    """
    _check_square("adjacency_matrix", adjacency_matrix)
    weights = adjacency_matrix.double()
    degree = weights.sum(1)
    inverse_degree = torch.where(degree > 0, 1.0 / degree.clamp_min(1e-12), torch.zeros_like(degree))
    score = (weights * (inverse_degree[:, None] + inverse_degree[None, :])).tolist()     # normalised-cut weights
    neighbours = [row.nonzero().squeeze(1).tolist() for row in weights]
    num_vertices = len(degree)
    parent = [-1] * num_vertices
    count = 0
    for i in torch.randperm(num_vertices, generator=generator).tolist():
        if parent[i] >= 0:
            continue
        free = [j for j in neighbours[i] if parent[j] < 0 and j != i]
        parent[i] = count
        if free:
            best = max(free, key=lambda j: score[i][j])                                 # the heaviest free edge
            parent[best] = count
        count += 1
    return torch.tensor(parent, dtype=torch.long)


def coarsen_adjacency(adjacency_matrix: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """The next level's graph: W' = P^T W P without self-loops, P_ic = 1 when parent[i] = c.

    Two coarse vertices are joined with the summed weight of the fine edges between their children.

    Args:
        adjacency_matrix: (V, V). parent: (V,) long from ``heavy_edge_matching``.

    Returns:
        (V', V') with V' = parent.max() + 1.
    """
    _check_square("adjacency_matrix", adjacency_matrix)
    assignment = torch.zeros(len(parent), int(parent.max()) + 1, dtype=adjacency_matrix.dtype)
    assignment[torch.arange(len(parent)), parent] = 1.0                                 # P (V, V')
    coarse = assignment.T @ adjacency_matrix @ assignment                               # (V', V')
    return coarse - torch.diag(torch.diagonal(coarse))


@dataclass
class GraphLevel:
    """One level of a coarsening hierarchy.

    Attributes:
        adjacency: (V_l, V_l) float32 edge weights (1 on the mesh's edges at level 0).
        laplacian: (V_l, V_l) the rescaled Laplacian L~ (``rescaled_laplacian``).
        parent: (V_l,) long, the vertex of level l + 1 each vertex is pooled into; None at the coarsest.
    """
    adjacency: torch.Tensor
    laplacian: torch.Tensor
    parent: torch.Tensor | None

    @property
    def num_vertices(self) -> int:
        return self.adjacency.shape[0]


def coarsen(faces: torch.Tensor, num_vertices: int, levels: int, seed: int = 0) -> list[GraphLevel]:
    """A coarsening hierarchy of a mesh: ``levels`` rounds of ``heavy_edge_matching``.

    Args:
        faces: (F, 3) integer vertex indices. num_vertices: V.
        levels: the number of coarsenings (the result has levels + 1 graphs).
        seed: the matchings' visiting order; the same seed gives the same hierarchy.

    Returns:
        list of ``GraphLevel``, the mesh first; level l + 1 has between V_l / 2 and V_l vertices.
    """
    if levels < 0:
        raise ValueError(f"levels: expected a number of coarsenings >= 0, got {levels}")
    generator = torch.Generator().manual_seed(int(seed))
    weights = adjacency(faces, num_vertices)
    hierarchy = []
    for level in range(levels + 1):
        parent = heavy_edge_matching(weights, generator) if level < levels else None
        hierarchy.append(GraphLevel(weights.float(), rescaled_laplacian(normalized_laplacian(weights)).float(), parent))
        if parent is not None:
            weights = coarsen_adjacency(weights, parent)
    return hierarchy


def _check_parent(parent, x) -> None:
    if not isinstance(parent, torch.Tensor) or parent.ndim != 1 or parent.dtype != torch.long:
        raise ValueError(f"parent: expected a (V,) long tensor of coarse vertex ids, got "
                         f"{tuple(parent.shape) if isinstance(parent, torch.Tensor) else type(parent).__name__}")
    _check_signal(x, len(parent))


def pool(x: torch.Tensor, parent: torch.Tensor, reduce: str = "amax") -> torch.Tensor:
    """A signal on level l to level l + 1: each coarse vertex takes the max (or mean) of its children.

    Args:
        x: (B, V_l, F). parent: (V_l,) long, ``GraphLevel.parent``.
        reduce: "amax" (the paper's max-pooling) or "mean".

    Returns:
        (B, V_{l+1}, F).
    """
    _check_parent(parent, x)
    if reduce not in ("amax", "mean"):
        raise ValueError(f"reduce: expected 'amax' or 'mean', got {reduce!r}")
    batch, _, features = x.shape
    out = x.new_zeros(batch, int(parent.max()) + 1, features)
    index = parent.to(x.device)[None, :, None].expand_as(x)
    return out.scatter_reduce(1, index, x, reduce=reduce, include_self=False)


def upsample(x: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """A signal on level l + 1 to level l: each fine vertex copies its coarse vertex (the inverse
    of pooling for a constant signal; Ge et al.'s upsampling).

    Args:
        x: (B, V_{l+1}, F). parent: (V_l,) long.

    Returns:
        (B, V_l, F).
    """
    if not isinstance(parent, torch.Tensor) or parent.ndim != 1 or parent.dtype != torch.long:
        raise ValueError("parent: expected a (V,) long tensor of coarse vertex ids")
    _check_signal(x, int(parent.max()) + 1)
    return x.index_select(1, parent.to(x.device))


def laplacian_coordinates(vertices: torch.Tensor, adjacency_matrix: torch.Tensor) -> torch.Tensor:
    """delta_i = v_i - mean of v_j over the neighbours j of i: the mesh's local shape (its "Laplacian
    coordinates", Ge et al.'s Laplacian loss term).

    Args:
        vertices: (B, V, 3), any length unit. adjacency_matrix: (V, V) 0/1.

    Returns:
        (B, V, 3), same unit.
    """
    _check_square("adjacency_matrix", adjacency_matrix)
    _check_signal(vertices, adjacency_matrix.shape[0], "vertices")
    degree = adjacency_matrix.sum(1).clamp_min(1.0)                                       # (V,)
    mean_neighbour = _apply(adjacency_matrix.to(vertices.dtype), vertices) / degree[:, None].to(vertices.dtype)
    return vertices - mean_neighbour
