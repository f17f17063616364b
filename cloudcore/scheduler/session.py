"""One scheduling session, Volcano's pipeline (reference §5.3): allocate, then preempt,
then reclaim, over a snapshot of nodes, queues and jobs (Apps).

**Allocate.**  Queues are served in order (higher ``priority`` first, then smaller share =
allocated/deserved); an *overused* queue (allocated ≥ deserved everywhere) is skipped -
except for its jobs that request nothing, which take nothing from the share.
From the chosen queue the best job is taken (higher priority first, then jobs still below
their gang minimum, then smaller DRF dominant share, then older, then by name) and its
pending replicas are placed one by one on the best node, each only while the queue stays
within its deserved share.  Once the job reaches its gang minimum it goes back into the
queue after each further replica, so jobs and queues take turns (progressive filling).
A gang that cannot reach its minimum is rolled back: all or nothing.

**Preempt** (same queue) and **reclaim** (across queues) run only for *starving* jobs -
below their gang minimum with replicas pending.  Preempt may evict running replicas of
lower-priority jobs in the same queue (falling back to the DRF fairness test when there
are none); reclaim, for a queue that is not overused and stays within its deserved share,
may evict replicas of other, reclaimable queues that hold more than they deserve.
Victims' jobs never drop below their own gang minimum.  Replicas placed this way are
*nominated*, not bound: they fit once the evicted replicas have stopped, and a later
session binds them.  Either is committed only if the job reaches its gang minimum.
(Allocate, too, nominates a replica that fits only thanks to replicas still stopping,
and a gang that is complete only counting nominated replicas waits as a whole.)

Departures from Volcano, all deliberate: nodes and jobs are visited in sorted order and
node ties go to the smallest name (determinism); a job without ``minAvailable`` has a
gang of 1; the "only from queues above deserved" reclaim rule always applies (Volcano
consults it only when its first tier finds no victims); the DRF preemption fallback
keeps gang protection; preempt, like allocate, keeps the preemptor's queue within its
deserved share; enqueue admission and backfill are not separate steps (a job with no
requests is placed by allocate like any other).

Everything is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudcore.scheduler.model import (
    Binding,
    BoundReplica,
    Eviction,
    EvictionAction,
    JobView,
    NodeView,
    QueueSummary,
    QueueView,
    SchedulerConfig,
    SessionResult,
)
from cloudcore.scheduler.nodeindex import NodeIndex
from cloudcore.scheduler.proportion import (
    QueueDemand,
    above_deserved,
    allocatable,
    deserved_shares,
    overused,
    queue_share,
)
from cloudcore.scheduler.resources import ZERO, FractionalResources, Resources, dominant_share
from cloudcore.scheduler.scoring import SCORERS

SHARE_DELTA = 1e-6
"""DRF's tolerance when comparing shares for preemption (Volcano's ``shareDelta``)."""

JobOrderKey = tuple[int, int, float, str, str]
QueueOrderKey = tuple[int, float, str]


def schedule(nodes: Sequence[NodeView], queues: Sequence[QueueView], jobs: Sequence[JobView],
             config: SchedulerConfig | None = None) -> SessionResult:
    """Run one session.  The result does not depend on the order of the inputs."""
    return _Session(nodes, queues, jobs, config or SchedulerConfig()).run()


@dataclass(eq=False)
class _Task:
    """A replica running on a node before the session: a possible victim."""

    job: _Job
    index: int
    node: str
    evicted: bool = False


class _Queue:
    def __init__(self, view: QueueView) -> None:
        self.view = view
        self.name = view.name
        self.allocated = ZERO
        self.request = ZERO
        self.deserved = FractionalResources()
        self.jobs: list[_Job] = []
        self.heap: list[tuple[JobOrderKey, str]] = []

    def order_key(self) -> QueueOrderKey:
        return (-self.view.priority, queue_share(self.allocated, self.deserved), self.name)

    def describe(self) -> str:
        return f"deserved {self.deserved.floor()}; allocated {self.allocated}"


class _Job:
    def __init__(self, view: JobView, queue: _Queue) -> None:
        self.view = view
        self.key = view.key
        self.queue = queue
        self.request = view.request
        self.min_available = max(1, view.min_available)
        self.pending: deque[int] = deque()
        self.ready = view.completed  # holding resources, or done: counts for the gang
        self.waiting = 0  # nominated this session
        self.allocated = ZERO
        self.share = 0.0
        self.reason: str | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready >= self.min_available

    @property
    def is_pipelined(self) -> bool:
        return self.ready + self.waiting >= self.min_available

    @property
    def starving(self) -> bool:
        return bool(self.pending) and not self.is_pipelined

    def order_key(self) -> JobOrderKey:
        return (-self.view.priority, 1 if self.is_ready else 0, self.share, self.view.created,
                self.key)


@dataclass
class _Allocation:
    job: _Job
    index: int
    node: str
    pipelined: bool


@dataclass
class _EvictionOp:
    task: _Task
    action: EvictionAction
    by: str


class _Session:
    def __init__(self, nodes: Sequence[NodeView], queues: Sequence[QueueView],
                 jobs: Sequence[JobView], config: SchedulerConfig) -> None:
        self.config = config
        self.scorer = SCORERS[config.scoring]
        self.index = NodeIndex(nodes, self.scorer)
        self.total = self.index.total
        self.queues = {q.name: _Queue(q) for q in sorted(queues, key=lambda q: q.name)}
        self.jobs: dict[str, _Job] = {}
        self.unschedulable: dict[str, str] = {}
        # Replicas holding resources, as possible victims: made only if a job starves
        # (most sessions never preempt or reclaim, and there is one per bound replica).
        self._holders: list[tuple[_Job, list[BoundReplica]]] = []
        self._tasks_by_node: dict[str, list[_Task]] | None = None
        self.nodes_with_tasks: list[str] = []
        self.bindings: list[Binding] = []
        self.nominations: list[Binding] = []
        self.evictions: list[Eviction] = []
        for view in sorted(jobs, key=lambda j: j.key):
            self._admit(view)
        self._divide()

    @property
    def tasks_by_node(self) -> dict[str, list[_Task]]:
        if self._tasks_by_node is None:
            tasks: dict[str, list[_Task]] = {}
            for job, holding in self._holders:
                for bound in holding:
                    if bound.node in self.index.nodes:
                        tasks.setdefault(bound.node, []).append(
                            _Task(job, bound.index, bound.node))
            self._tasks_by_node = tasks
            self.nodes_with_tasks = sorted(tasks)
        return self._tasks_by_node

    # --- building the snapshot ------------------------------------------------------------

    def _admit(self, view: JobView) -> None:
        holding = [b for b in view.bound if not b.releasing]
        for bound in view.bound:
            if bound.node in self.index.nodes:
                self.index.change(bound.node, used=view.request,
                                  releasing=view.request if bound.releasing else ZERO)
        ours = view.scheduler_name in (None, self.config.scheduler_name)
        holding_indices = {b.index for b in holding}
        pending = sorted(set(view.pending) - holding_indices)
        if not ours or (not holding and not pending):
            return
        queue = self.queues.get(view.queue)
        if queue is None:
            if pending:
                self.unschedulable[view.key] = f"queue {view.queue!r} does not exist"
            return
        job = _Job(view, queue)
        job.ready += len(holding)
        job.allocated = view.request * len(holding)
        job.share = dominant_share(job.allocated, self.total)
        if holding:
            self._holders.append((job, holding))
        self.jobs[job.key] = job
        queue.jobs.append(job)
        queue.allocated += job.allocated
        queue.request += job.allocated
        if not queue.view.open:
            if pending:
                self.unschedulable[job.key] = f"queue {queue.name} is closed"
            return
        queue.request += view.request * len(pending)
        if job.ready + len(pending) < job.min_available:
            self.unschedulable[job.key] = (f"minAvailable is {job.min_available} but only "
                                           f"{job.ready + len(pending)} replicas can run")
            return
        job.pending.extend(pending)

    def _divide(self) -> None:
        """Deserved shares for the queues that have jobs (proportion, §5.6)."""
        taking_part = [q for q in self.queues.values() if q.jobs]
        demands = [QueueDemand(q.name, q.request, q.view.weight, q.view.capability,
                               q.view.guarantee) for q in taking_part]
        guarantees = sum((q.view.guarantee for q in self.queues.values()), ZERO)
        for name, deserved in deserved_shares(self.total, demands, guarantees).items():
            self.queues[name].deserved = deserved

    # --- bookkeeping shared by all actions ------------------------------------------------

    def _place(self, job: _Job, node: str, pipelined: bool, sign: int) -> None:
        amount = job.request * sign
        if pipelined:
            self.index.change(node, pipelined=amount)
            job.waiting += sign
        else:
            self.index.change(node, used=amount)
            job.ready += sign
        job.allocated += amount
        job.share = dominant_share(job.allocated, self.total)
        job.queue.allocated += amount

    def _release(self, task: _Task, sign: int) -> None:
        job = task.job
        amount = job.request * sign
        self.index.change(task.node, releasing=amount)
        job.ready -= sign
        job.allocated -= amount
        job.share = dominant_share(job.allocated, self.total)
        job.queue.allocated -= amount
        task.evicted = sign > 0

    def _fit_message(self, job: _Job) -> str:
        return self.index.message(job.view.node_selector, job.request)

    def _gang_message(self, job: _Job, reason: str) -> str:
        if job.min_available <= 1:
            return reason
        return (f"only {job.ready + job.waiting} of the {job.min_available} replicas "
                f"minAvailable asks for can be placed: {reason}")

    def _queue_full_message(self, job: _Job) -> str:
        return (f"queue {job.queue.name} has no room within its deserved share for another "
                f"replica ({job.request}): {job.queue.describe()}")

    # --- allocate -------------------------------------------------------------------------

    def _allocate(self) -> None:
        queue_heap: list[tuple[QueueOrderKey, str]] = []
        for queue in self.queues.values():
            queue.heap = [(job.order_key(), job.key) for job in queue.jobs if job.pending]
            heapq.heapify(queue.heap)
            if queue.heap and queue.view.open:
                queue_heap.append((queue.order_key(), queue.name))
        heapq.heapify(queue_heap)
        while queue_heap:
            _, name = heapq.heappop(queue_heap)
            queue = self.queues[name]
            if overused(queue.allocated, queue.deserved):
                # Replicas that request nothing take nothing from the share (Volcano
                # backfills them); everything else waits for a later session.
                free = [entry for entry in queue.heap if self.jobs[entry[1]].request == ZERO]
                for _, key in queue.heap:
                    if self.jobs[key].request != ZERO:
                        self._explain_overused(self.jobs[key])
                queue.heap = free
                heapq.heapify(queue.heap)
            if not queue.heap:
                continue
            _, key = heapq.heappop(queue.heap)
            self._allocate_turn(self.jobs[key])
            heapq.heappush(queue_heap, (queue.order_key(), queue.name))

    def _explain_overused(self, job: _Job) -> None:
        # Volcano skips the queue without looking at nodes; when the nodes would say no
        # as well, theirs is the more useful answer.
        if self.index.best(job.view.node_selector, job.request) is None:
            job.reason = self._fit_message(job)
        else:
            job.reason = f"queue {job.queue.name} has used its deserved share: " \
                f"{job.queue.describe()}"

    def _allocate_turn(self, job: _Job) -> None:
        queue = job.queue
        statement = _Statement(self)
        selector = self.index.for_selector(job.view.node_selector)
        while job.pending:
            node = selector.best(job.request)
            if node is None:
                job.reason = self._fit_message(job)
                break
            if not allocatable(queue.allocated, job.request, queue.deserved):
                # Volcano checks the queue first; the nodes' answer is the more useful
                # reason when both say no, so it is asked first (same outcome).
                job.reason = self._queue_full_message(job)
                break
            statement.allocate(job, node, pipelined=not self.index.nodes[node].idle_fits(
                job.request))
            if job.is_ready and job.pending:
                heapq.heappush(queue.heap, (job.order_key(), job.key))
                break
        if job.is_pipelined:
            statement.commit()
        else:
            if job.reason is not None:
                job.reason = self._gang_message(job, job.reason)
            statement.discard()

    # --- preempt and reclaim --------------------------------------------------------------

    def _starving_by_queue(self) -> dict[str, list[_Job]]:
        out: dict[str, list[_Job]] = {}
        for queue in self.queues.values():
            if queue.view.open:
                starving = sorted((j for j in queue.jobs if j.starving), key=_Job.order_key)
                if starving:
                    out[queue.name] = starving
        return out

    def _preempt(self) -> None:
        for jobs in self._starving_by_queue().values():
            for job in jobs:
                self._make_room_for(job, EvictionAction.PREEMPT)

    def _reclaim(self) -> None:
        waiting = self._starving_by_queue()
        while waiting:
            name = min(waiting, key=lambda n: self.queues[n].order_key())
            queue = self.queues[name]
            job = waiting[name].pop(0)
            if not waiting[name]:
                del waiting[name]
            if overused(queue.allocated, queue.deserved):
                continue
            self._make_room_for(job, EvictionAction.RECLAIM)

    def _make_room_for(self, job: _Job, action: EvictionAction) -> None:
        if not job.starving:
            return
        statement = _Statement(self)
        while job.starving:
            if not self._place_with_evictions(job, action, statement):
                break
        if job.is_pipelined:
            if statement.ops:
                job.reason = None  # what allocate said no longer applies
            statement.commit()
        else:
            statement.discard()

    def _place_with_evictions(self, job: _Job, action: EvictionAction,
                              statement: _Statement) -> bool:
        """Nominate the job's next pending replica to a node, evicting victims there if
        needed.  False if no node can be made to fit.

        Either way the job's queue must end up within its deserved share (reclaim's
        Preemptive check; for preempt, evicting replicas of the same queue makes room
        in the share as well as on the node)."""
        queue = job.queue

        def queue_room(freed_in_queue: Resources) -> bool:
            return allocatable(queue.allocated - freed_in_queue, job.request, queue.deserved)

        if action is EvictionAction.RECLAIM and not queue_room(ZERO):
            return False
        selector = self.index.for_selector(job.view.node_selector)
        node = selector.best(job.request)
        if node is not None and queue_room(ZERO):
            statement.allocate(job, node, pipelined=True)
            return True
        choose = self._preempt_victims if action is EvictionAction.PREEMPT else \
            self._reclaim_victims
        tasks_by_node = self.tasks_by_node
        for name in self.nodes_with_tasks:
            if name not in selector.members:
                continue
            tasks = tasks_by_node[name]
            victims = _enough(self.index.nodes[name].future_idle(), job, queue_room,
                              choose(job, [t for t in tasks if not t.evicted]))
            if victims is None:
                continue
            for victim in victims:
                statement.evict(victim, action, job.key)
            statement.allocate(job, name, pipelined=True)
            return True
        return False

    def _preempt_victims(self, job: _Job, tasks: list[_Task]) -> list[_Task]:
        """Same queue, other jobs.  First tier: lower job priority and above the victim's
        gang minimum; if that finds none, the DRF test (the preemptor's share after
        taking the replica stays below, or equal to, the victim's after losing it)."""
        candidates = _victim_order([t for t in tasks
                                    if t.job.queue is job.queue and t.job is not job])
        lower = _gang_protected([t for t in candidates
                                 if t.job.view.priority < job.view.priority])
        if lower:
            return lower
        mine = dominant_share(job.allocated + job.request, self.total)
        remaining: dict[str, Resources] = {}
        fair: list[_Task] = []
        for task in candidates:
            left = remaining.get(task.job.key, task.job.allocated) - task.job.request
            remaining[task.job.key] = left
            theirs = dominant_share(left, self.total)
            if mine < theirs or abs(mine - theirs) <= SHARE_DELTA:
                fair.append(task)
        return _gang_protected(fair)

    def _reclaim_victims(self, job: _Job, tasks: list[_Task]) -> list[_Task]:
        """Other, reclaimable queues that hold more than they deserve, never below the
        victim's gang minimum."""
        candidates = _gang_protected(_victim_order([
            t for t in tasks if t.job.queue is not job.queue and t.job.queue.view.reclaimable]))
        holding: dict[str, Resources] = {}
        out: list[_Task] = []
        for task in candidates:
            queue = task.job.queue
            held = holding.get(queue.name, queue.allocated)
            if above_deserved(held, queue.deserved):
                holding[queue.name] = held - task.job.request
                out.append(task)
        return out

    # --- result ---------------------------------------------------------------------------

    def run(self) -> SessionResult:
        self._allocate()
        if self.config.preempt:
            self._preempt()
        if self.config.reclaim:
            self._reclaim()
        nominated: dict[str, int] = {}
        for nomination in self.nominations:
            nominated[nomination.job] = nominated.get(nomination.job, 0) + 1
        for job in self.jobs.values():
            parts = []
            if nominated.get(job.key):
                parts.append(f"{nominated[job.key]} replicas nominated, waiting for evicted "
                             "replicas to stop")
            if job.pending:
                parts.append(job.reason or f"{len(job.pending)} replicas wait for a later session")
            if parts:
                self.unschedulable[job.key] = "; ".join(parts)
        summaries = {
            q.name: QueueSummary(q.name, q.allocated, q.request, q.deserved,
                                 queue_share(q.allocated, q.deserved))
            for q in self.queues.values()
        }
        return SessionResult(tuple(self.bindings), tuple(self.nominations),
                             tuple(self.evictions), dict(sorted(self.unschedulable.items())),
                             summaries)


class _Statement:
    """Tentative changes to the session that are kept (commit) or undone (discard)
    together: how a gang is placed all or nothing."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.ops: list[_Allocation | _EvictionOp] = []

    def allocate(self, job: _Job, node: str, *, pipelined: bool) -> None:
        index = job.pending.popleft()
        self.session._place(job, node, pipelined, +1)
        self.ops.append(_Allocation(job, index, node, pipelined))

    def evict(self, task: _Task, action: EvictionAction, by: str) -> None:
        self.session._release(task, +1)
        self.ops.append(_EvictionOp(task, action, by))

    def discard(self) -> None:
        for op in reversed(self.ops):
            if isinstance(op, _Allocation):
                self.session._place(op.job, op.node, op.pipelined, -1)
                op.job.pending.appendleft(op.index)
            else:
                self.session._release(op.task, -1)
        self.ops.clear()

    def commit(self) -> None:
        session = self.session
        for op in self.ops:
            if isinstance(op, _Allocation):
                binding = Binding(op.job.key, op.index, op.node)
                # A gang that is complete only counting nominated replicas waits as a whole.
                if op.pipelined or not op.job.is_ready:
                    session.nominations.append(binding)
                else:
                    session.bindings.append(binding)
            else:
                task = op.task
                session.evictions.append(
                    Eviction(task.job.key, task.index, task.node, op.action, op.by))
        self.ops.clear()


def _victim_order(tasks: list[_Task]) -> list[_Task]:
    """Evict first what the scheduler would place last: reverse job order, then the
    highest replica index."""
    return sorted(tasks, key=lambda t: (t.job.order_key(), t.index), reverse=True)


def _gang_protected(tasks: list[_Task]) -> list[_Task]:
    """Volcano's gang rule for victims: a job only loses replicas above its minimum."""
    left: dict[str, int] = {}
    out: list[_Task] = []
    for task in tasks:
        job = task.job
        count = left.get(job.key, job.ready)
        if count > job.min_available:
            left[job.key] = count - 1
            out.append(task)
    return out


def _enough(future_idle: Resources, job: _Job, queue_room: Callable[[Resources], bool],
            victims: list[_Task]) -> list[_Task] | None:
    """The shortest prefix of ``victims`` whose eviction makes ``job``'s next replica fit
    on the node and in its queue's share, or None if all of them would not."""
    free = future_idle
    freed_in_queue = ZERO
    taken: list[_Task] = []
    for victim in victims:
        if job.request.fits_in(free) and queue_room(freed_in_queue):
            break
        free += victim.job.request
        if victim.job.queue is job.queue:
            freed_in_queue += victim.job.request
        taken.append(victim)
    return taken if job.request.fits_in(free) and queue_room(freed_in_queue) else None
