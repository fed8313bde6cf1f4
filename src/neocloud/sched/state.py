"""Allocation state of the fleet, with the indexes placement asks of it.

GPU use is tracked per GPU in thousandths (milli-GPU) so shared GPUs are exact. Nodes are
grouped into *cells* (one leaf, one GPU type); each cell keeps, for every count k of wholly free
GPUs, how many of its nodes have exactly k free and which ones. "Where does a gang of n nodes x g
GPUs fit, inside which leaf or fabric" is then a sum over cells, never a scan over nodes.
"""

from __future__ import annotations

import copy
import itertools
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from neocloud.errors import SchedulingError
from neocloud.model.fleet import Fleet
from neocloud.model.job import Job

FULL = 1000  # milli-GPU in one GPU
UNTRACKED = 1 << 48
_BY_NODE = 8  # allocations on at most this many nodes are applied node by node, larger ones vectorised


@dataclass(frozen=True, slots=True)
class Allocation:
    """Where a job runs: the GPUs it holds on each of its nodes."""

    job_id: str
    nodes: tuple[int, ...]
    gpus: tuple[tuple[int, ...], ...]  # GPU indices held on each node
    gpu_milli: int  # held on each of those GPUs (FULL for whole GPUs)
    cpu_milli: int = 0  # per node
    memory_mib: int = 0  # per node

    @property
    def gpu_count(self) -> float:
        return sum(len(g) for g in self.gpus) * self.gpu_milli / FULL


class ClusterState:
    """What is free where. Mutated only through `allocate` and `release`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        nodes = fleet.nodes
        n = len(nodes)
        self.max_gpus = max((nd.gpus for nd in nodes), default=0)
        width = max(self.max_gpus, 1)
        self.gpu_cap = np.array([nd.gpus for nd in nodes], dtype=np.int64)
        self._caps: list[int] = self.gpu_cap.tolist()
        # Per-GPU free milli; GPUs a node does not have are -1 so they never fit anything.
        self.gpu_left = np.full((n, width), -1, dtype=np.int64)
        for nd in nodes:
            self.gpu_left[nd.id, : nd.gpus] = FULL
        # A node that does not declare CPU or memory never runs short of them.
        self.cpu_cap = np.array([nd.cpu_milli or UNTRACKED for nd in nodes], dtype=np.int64)
        self.mem_cap = np.array([nd.memory_mib or UNTRACKED for nd in nodes], dtype=np.int64)
        self._cpu_caps: list[int] = self.cpu_cap.tolist()
        self._mem_caps: list[int] = self.mem_cap.tolist()
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()
        self.whole_free = self.gpu_cap.copy()
        self.max_left = np.where(self.gpu_cap > 0, FULL, -1)  # most free milli on any one GPU
        self.stamp = np.zeros(n, dtype=np.int64)  # moves whenever a node's free capacity changes
        self.schedulable = np.ones(n, dtype=bool)
        self.leaf = np.array([nd.leaf for nd in nodes], dtype=np.int64)
        self.fabric = np.array([fleet.leaves[nd.leaf].fabric for nd in nodes], dtype=np.int64)
        self.type_names = sorted({nd.gpu.name for nd in nodes if nd.gpu is not None})
        type_id = {t: i for i, t in enumerate(self.type_names)}
        self.gpu_type = np.array([type_id[nd.gpu.name] if nd.gpu else -1 for nd in nodes], dtype=np.int64)

        # Cells: (leaf, GPU type) groups, the unit of the fit index.
        cell_ids: dict[tuple[int, int], int] = {}
        self.cell = np.empty(n, dtype=np.int64)
        for nd in nodes:
            key = (nd.leaf, int(self.gpu_type[nd.id]))
            self.cell[nd.id] = cell_ids.setdefault(key, len(cell_ids))
        self.cell_leaf = np.array([k[0] for k in cell_ids], dtype=np.int64)
        self.cell_type = np.array([k[1] for k in cell_ids], dtype=np.int64)
        self.cell_fabric = np.array([fleet.leaves[k[0]].fabric for k in cell_ids], dtype=np.int64)
        self.hist = np.zeros((len(cell_ids), width + 1), dtype=np.int64)
        # Node ids per (cell, free GPUs), sorted: a cell is one leaf's nodes of a type, so a plain list
        # beats a balanced tree.
        self.buckets: list[list[list[int]]] = [[[] for _ in range(width + 1)] for _ in cell_ids]
        self.cell_nodes = [np.flatnonzero(self.cell == c) for c in range(len(cell_ids))]
        self.cell_of: list[int] = self.cell.tolist()  # `cell` as a list: faster by the node
        self._indexed: list[bool] = (self.gpu_cap > 0).tolist()  # schedulable nodes with GPUs
        self._hidden: set[int] = set()  # withheld for a moment: in the buckets, not in the counts
        for nd in nodes:
            self._index_add(nd.id)

        self._cells_for: dict[tuple[str, ...], np.ndarray] = {}
        self._nodes_for: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray | slice]] = {}
        self._widest: dict[tuple[str, ...], int] = {}
        self._groups_for: dict[tuple[str, ...], list[np.ndarray]] = {}
        self._group_of: dict[tuple[str, ...], list[int]] = {}
        self.version = 0  # bumped when capacity comes back (uncordon), so a scheduler knows to look
        self.cordons = 0  # bumped by every cordon and uncordon: what is reserved on which nodes may change
        self.changes = 0  # bumped by every allocation, release, cordon and uncordon
        self.allocations: dict[str, Allocation] = {}
        self.on_node: list[set[str]] = [set() for _ in nodes]  # jobs holding part of each node
        self.total_gpus = int(self.gpu_cap.sum())
        self.used_milli = 0

    # What `allocate`, `release`, `set_schedulable` and `withheld` change; the rest is fixed by the
    # fleet (or cached from what is), and a copy shares it.
    _ARRAYS = ("gpu_left", "cpu_free", "mem_free", "whole_free", "max_left", "stamp", "schedulable", "hist")

    def __deepcopy__(self, memo: dict[int, object]) -> ClusterState:
        """A copy to run forward (the forecast's): the changing parts copied, the fleet's shared;
        several times cheaper than copying every list and array. Each part copied goes into `memo`,
        so that whatever else holds one of them (a score cache holds `stamp`) gets the copy's."""
        new = copy.copy(self)
        memo[id(self)] = new

        def part(name: str, dup: Callable[[Any], Any]) -> None:
            old = getattr(self, name)
            if id(old) not in memo:
                memo[id(old)] = dup(old)
            setattr(new, name, memo[id(old)])

        for name in self._ARRAYS:
            part(name, np.copy)
        part("buckets", lambda buckets: [[bucket[:] for bucket in cell] for cell in buckets])
        part("_indexed", list)
        part("_hidden", set)
        part("allocations", dict)  # an Allocation is frozen: shared
        part("on_node", lambda on_node: [set(jobs) for jobs in on_node])
        return new

    # -- the fit index --------------------------------------------------------------------------
    def _index_add(self, node: int) -> None:
        if self._indexed[node]:
            c, k = self.cell_of[node], int(self.whole_free[node])
            self.hist[c, k] += 1
            insort(self.buckets[c][k], node)

    def _index_remove(self, node: int) -> None:
        if self._indexed[node]:
            c, k = self.cell_of[node], int(self.whole_free[node])
            self.hist[c, k] -= 1
            bucket = self.buckets[c][k]
            del bucket[bisect_left(bucket, node)]

    def cells_for(self, types: tuple[str, ...]) -> np.ndarray:
        """Cells whose GPU type a job accepts (all cells with GPUs when it names none)."""
        cells = self._cells_for.get(types)
        if cells is None:
            if types:
                ids = [self.type_names.index(t) for t in types if t in self.type_names]
                cells = np.flatnonzero(np.isin(self.cell_type, ids))
            else:
                cells = np.flatnonzero(self.cell_type >= 0)
            self._cells_for[types] = cells
        return cells

    def nodes_for(self, types: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | slice]:
        """Nodes of the cells a job accepts, and how to index per-node arrays with them.

        The index is a slice when those nodes are contiguous ids (the usual case: one GPU model, or
        models by leaf), which makes every per-node question a view instead of a gather.
        """
        found = self._nodes_for.get(types)
        if found is None:
            cells = self.cells_for(types)
            nodes = np.concatenate([self.cell_nodes[c] for c in cells]) if len(cells) else np.empty(0, np.int64)
            contiguous = len(nodes) > 0 and bool((nodes == np.arange(nodes[0], nodes[0] + len(nodes))).all())
            found = (nodes, slice(int(nodes[0]), int(nodes[0]) + len(nodes)) if contiguous else nodes)
            self._nodes_for[types] = found
        return found

    def groups_for(self, types: tuple[str, ...]) -> list[np.ndarray]:
        """Accepted cells by (fabric, GPU type): the most one gang may span."""
        groups = self._groups_for.get(types)
        if groups is None:
            cells = self.cells_for(types)
            keys = self.cell_fabric[cells] * (len(self.type_names) + 1) + self.cell_type[cells]
            groups = [cells[keys == k] for k in np.unique(keys)]
            self._groups_for[types] = groups
        return groups

    def group_of(self, types: tuple[str, ...]) -> list[int]:
        """Per cell, its index in `groups_for(types)`, or -1 for cells a job of those types cannot use."""
        found = self._group_of.get(types)
        if found is None:
            found = [-1] * len(self.cell_leaf)
            for i, group in enumerate(self.groups_for(types)):
                for c in group.tolist():
                    found[c] = i
            self._group_of[types] = found
        return found

    def widest(self, types: tuple[str, ...]) -> int:
        """GPUs on the largest node of the types a job accepts: how wide its gang's nodes can be."""
        width = self._widest.get(types)
        if width is None:
            cells = self.cells_for(types)
            width = max((int(self.gpu_cap[self.cell_nodes[c]].max()) for c in cells), default=0)
            self._widest[types] = width
        return width

    def layout(self, job: Job) -> tuple[int, ...]:
        """GPUs on each node of the job's gang, on the widest nodes it may use."""
        return job.layout(max(self.widest(job.gpu_types), 1))

    def nodes_with(self, cells: np.ndarray, at_least: int) -> np.ndarray:
        """Per cell, how many schedulable nodes have at least `at_least` wholly free GPUs."""
        counts: np.ndarray = self.hist[cells, at_least:].sum(axis=1)
        return counts

    def candidates(self, cell: int, at_least: int) -> Iterator[int]:
        """Nodes of a cell with at least `at_least` free GPUs, tightest fit first, by id."""
        hidden = self._hidden
        for k in range(at_least, self.hist.shape[1]):
            if hidden:
                yield from (n for n in self.buckets[cell][k] if n not in hidden)
            else:
                yield from self.buckets[cell][k]

    def free_nodes(self, cell: int, at_least: int) -> Iterator[tuple[int, int]]:
        """`candidates`, each with its count of wholly free GPUs."""
        hidden = self._hidden
        for k in range(at_least, self.hist.shape[1]):
            for n in self.buckets[cell][k]:
                if n not in hidden:
                    yield n, k

    @property
    def takes_work(self) -> list[bool]:
        """Per node, whether it has GPUs and takes work (not cordoned), withheld nodes aside."""
        return self._indexed

    # -- mutation -------------------------------------------------------------------------------
    def allocate(self, alloc: Allocation) -> None:
        if alloc.job_id in self.allocations:
            raise SchedulingError(f"job {alloc.job_id} is already placed")
        caps = self._caps
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            if gpus and (len(set(gpus)) != len(gpus) or min(gpus) < 0 or max(gpus) >= caps[node]):
                raise SchedulingError(f"job {alloc.job_id}: GPUs {list(gpus)} are not distinct GPUs of node {node}")
        if len(alloc.nodes) > _BY_NODE:
            nodes, rows, cols = _coordinates(alloc)
            if (self.gpu_left[rows, cols] < alloc.gpu_milli).any() or (self.cpu_free[nodes] < alloc.cpu_milli).any() \
                    or (self.mem_free[nodes] < alloc.memory_mib).any():
                raise SchedulingError(f"job {alloc.job_id} does not fit on nodes {list(alloc.nodes)}")
            self._apply_vector(alloc, nodes, rows, cols, -1)
        else:
            for node, gpus in zip(alloc.nodes, alloc.gpus):
                left = self.gpu_left[node].tolist()  # a list's items, unlike an array's, cost no object each
                if any(left[g] < alloc.gpu_milli for g in gpus) or self.cpu_free[node] < alloc.cpu_milli \
                        or self.mem_free[node] < alloc.memory_mib:
                    raise SchedulingError(f"job {alloc.job_id} does not fit on nodes {list(alloc.nodes)}")
            self._apply_by_node(alloc, -1)
        self.allocations[alloc.job_id] = alloc
        for node in alloc.nodes:
            self.on_node[node].add(alloc.job_id)

    def release(self, job_id: str) -> Allocation:
        alloc = self.allocations.pop(job_id)
        if len(alloc.nodes) > _BY_NODE:
            self._apply_vector(alloc, *_coordinates(alloc), +1)
        else:
            self._apply_by_node(alloc, +1)
        for node in alloc.nodes:
            self.on_node[node].discard(job_id)
        return alloc

    # Taking (sign -1) or giving back (+1) what an allocation holds, the fit index kept in step: node
    # by node in Python scalars for a few nodes (several times faster than numpy's fancy indexing),
    # vectorised for a gang of many.
    def _apply_by_node(self, alloc: Allocation, sign: int) -> None:
        milli = sign * alloc.gpu_milli
        for node, gpus in zip(alloc.nodes, alloc.gpus):
            row = self.gpu_left[node]
            left = row.tolist()
            for g in gpus:
                left[g] += milli
            row[:] = left
            whole = left.count(FULL)
            if whole != self.whole_free[node]:
                self._index_remove(node)
                self.whole_free[node] = whole
                self._index_add(node)
            self.max_left[node] = max(left)
            self.cpu_free[node] += sign * alloc.cpu_milli
            self.mem_free[node] += sign * alloc.memory_mib
            self.stamp[node] += 1
        self.changes += 1
        self.used_milli -= milli * sum(len(g) for g in alloc.gpus)  # sign is that of the free capacity

    def _apply_vector(self, alloc: Allocation, nodes: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      sign: int) -> None:
        before = self.whole_free[nodes].tolist()
        self.gpu_left[rows, cols] += sign * alloc.gpu_milli
        self.cpu_free[nodes] += sign * alloc.cpu_milli
        self.mem_free[nodes] += sign * alloc.memory_mib
        whole = (self.gpu_left[nodes] == FULL).sum(axis=1)
        self.whole_free[nodes] = whole
        self.max_left[nodes] = self.gpu_left[nodes].max(axis=1)
        self.stamp[nodes] += 1
        moved = [(node, old, new) for node, old, new in zip(alloc.nodes, before, whole.tolist())
                 if old != new and self._indexed[node]]
        if moved:
            cells = [self.cell_of[node] for node, _, _ in moved]
            np.subtract.at(self.hist, (cells, [old for _, old, _ in moved]), 1)
            np.add.at(self.hist, (cells, [new for _, _, new in moved]), 1)
            for c, (node, old, new) in zip(cells, moved):
                bucket = self.buckets[c][old]
                del bucket[bisect_left(bucket, node)]
                insort(self.buckets[c][new], node)
        self.changes += 1
        self.used_milli -= sign * alloc.gpu_milli * len(cols)

    def set_schedulable(self, node: int, schedulable: bool) -> None:
        """Cordon (False) or uncordon (True) a node: running work stays, new work goes elsewhere."""
        if bool(self.schedulable[node]) == schedulable:
            return
        self.cordons += 1
        self.changes += 1
        if schedulable:
            self.schedulable[node] = True
            self._indexed[node] = bool(self.gpu_cap[node] > 0)
            self._index_add(node)
            self.version += 1
        else:
            self._index_remove(node)
            self.schedulable[node] = False
            self._indexed[node] = False

    @contextmanager
    def withheld(self, nodes: Iterable[int]) -> Iterator[None]:
        """Hide nodes from placement for a moment (EASY backfill keeps the head's nodes free).

        Cheaper than a cordon: the buckets stay as they are, the counts and the mask change.
        """
        hidden = np.array([n for n in nodes if self._indexed[n]], dtype=np.int64)
        where = (self.cell[hidden], self.whole_free[hidden])
        np.subtract.at(self.hist, where, 1)
        self.schedulable[hidden] = False
        self._hidden.update(hidden.tolist())
        try:
            yield
        finally:
            self._hidden.difference_update(hidden.tolist())
            self.schedulable[hidden] = True
            np.add.at(self.hist, where, 1)

    # -- questions ------------------------------------------------------------------------------
    @property
    def withholding(self) -> bool:
        """Whether some nodes are withheld right now (inside `withheld`)."""
        return bool(self._hidden)

    def fits_cpu_mem(self, node: int, cpu_milli: int, memory_mib: int) -> bool:
        return bool(self.cpu_free[node] >= cpu_milli and self.mem_free[node] >= memory_mib)

    def could_host(self, node: int, cpu_milli: int, memory_mib: int) -> bool:
        """Whether a GPU node takes work now and is big enough for the CPU and memory asked, once
        free: one node's answer, where a per-node array would cost the whole fleet."""
        return self._indexed[node] and node not in self._hidden and self._cpu_caps[node] >= cpu_milli \
            and self._mem_caps[node] >= memory_mib

    @property
    def allocated_share(self) -> float:
        """GPU capacity allocated, 0-1."""
        return self.used_milli / (self.total_gpus * FULL) if self.total_gpus else 0.0


def _coordinates(alloc: Allocation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The allocation's nodes, and (node, GPU) index pairs of every GPU it holds."""
    nodes = np.fromiter(alloc.nodes, dtype=np.int64, count=len(alloc.nodes))
    rows = np.repeat(nodes, [len(g) for g in alloc.gpus])
    cols = np.fromiter(itertools.chain.from_iterable(alloc.gpus), dtype=np.int64, count=len(rows))
    return nodes, rows, cols
