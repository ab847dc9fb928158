"""spikepipe_jax.schedule: task graphs, bounds, standard pipelines and the SpikePipe scheduler.

Modules, each importing only those above it (no circles)::

    graph           Task, Edge, TaskGraph (data model), topological order, SCCs, longest paths
    graph_json      JSON in/out            retiming     delays on update loops, retiming
    training_graph  cost-model tasks -> training graph (B split, task splitting)
    generators      random graphs, toy task lists
    comm            CommModel, bytes communicated      bounds    iteration / resource bounds
    validate        Schedule, Placement, the independent validator
    timeline        the one stage-level event simulator (baselines' timelines, delay walks)
    indexed         index-based graph view     reservation   modulo reservation tables
    phases          list / hybrid placement phases at one period
    comm_search     layer affinity, local search for fewer bytes at a fixed period
    period_search   modulo_schedule: the smallest period a phase reaches
    partition       contiguous layer partitions (min-max, PipeDream's DP)
    tradeoff        assignments trading largest load for bytes (the budget policy)
    comm_bounds     lower bounds on the period under a byte budget (exact / per-layer)
    policies        spikepipe_schedule: processor policies, task splitting, the byte budget
    baselines       GPipe, PipeDream 1F1B, ZB-H1     exact    branch and bound
    delays          gradient delays from timelines   study    all methods on one graph; the sweep

Pure Python over plain data (no JAX, no NumPy), so it runs anywhere.  Typical use::

    from spikepipe_jax import schedule as sch
    g = sch.graph_from_tasks(tasks, delays=sch.layerpipe_delays(L), split_backward=True)
    s = sch.spikepipe_schedule(g, processors=8)
    sch.validate(s); s.period, sch.delays_for(s)
"""

from spikepipe_jax.schedule.baselines import (gpipe_schedule, linear_micro_graph, micro_batch_graph,
                                              pipedream_schedule, zb_h1_schedule)
from spikepipe_jax.schedule.bounds import (iteration_bound, lower_bound, max_cycle_ratio,
                                           period_bounds, resource_bound)
from spikepipe_jax.schedule.comm import CommModel, bytes_communicated, training_bytes
from spikepipe_jax.schedule.delays import (delays_for, delays_from_timeline, fully_pipelined_timeline,
                                           one_f_one_b_timeline, schedule_timeline)
from spikepipe_jax.schedule.exact import SearchLimit, exact_schedule
from spikepipe_jax.schedule.generators import random_graph, toy_training_tasks
from spikepipe_jax.schedule.graph import Edge, Task, TaskGraph, make_graph, topological_order
from spikepipe_jax.schedule.graph_json import graph_from_json, graph_to_json
from spikepipe_jax.schedule.partition import partition_min_max, pipedream_partition
from spikepipe_jax.schedule.period_search import modulo_schedule
from spikepipe_jax.schedule.policies import spikepipe_schedule, split_plan
from spikepipe_jax.schedule.retiming import (layerpipe_delays, pipeline_retiming, retime, stage_map,
                                             update_delays, with_update_distances)
from spikepipe_jax.schedule.training_graph import graph_from_tasks, is_training_graph
from spikepipe_jax.schedule.validate import (Placement, Schedule, normalize, placements_from_json,
                                             schedule_from_json, schedule_violations, validate)

__all__ = [
    "Task", "Edge", "TaskGraph", "make_graph", "topological_order", "graph_from_json", "graph_to_json",
    "graph_from_tasks", "retime", "pipeline_retiming", "layerpipe_delays", "stage_map",
    "with_update_distances", "update_delays", "is_training_graph", "random_graph",
    "toy_training_tasks",
    "period_bounds", "iteration_bound", "lower_bound", "max_cycle_ratio", "resource_bound",
    "CommModel", "bytes_communicated", "training_bytes",
    "Placement", "Schedule", "schedule_violations", "validate", "normalize",
    "placements_from_json", "schedule_from_json",
    "modulo_schedule", "spikepipe_schedule", "split_plan",
    "gpipe_schedule", "pipedream_schedule", "zb_h1_schedule", "partition_min_max",
    "pipedream_partition", "micro_batch_graph", "linear_micro_graph",
    "exact_schedule", "SearchLimit",
    "delays_for", "delays_from_timeline", "one_f_one_b_timeline", "fully_pipelined_timeline",
    "schedule_timeline",
]
