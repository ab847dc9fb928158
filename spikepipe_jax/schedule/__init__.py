"""spikepipe_jax.schedule: task graphs, bounds, standard pipelines and the SpikePipe scheduler.

Pure Python over plain data (no JAX, no NumPy), so it runs anywhere.  Typical use::

    from spikepipe_jax import schedule as sch
    g = sch.graph_from_tasks(tasks, delays=sch.layerpipe_delays(L), split_backward=True)
    s = sch.spikepipe_schedule(g, processors=8)
    sch.validate(s); s.period, sch.delays_for(s)
"""

from spikepipe_jax.schedule.baselines import (gpipe_schedule, linear_micro_graph, micro_batch_graph,
                                              partition_min_max, pipedream_partition,
                                              pipedream_schedule, zb_h1_schedule)
from spikepipe_jax.schedule.bounds import (iteration_bound, lower_bound, max_cycle_ratio,
                                           period_bounds, resource_bound)
from spikepipe_jax.schedule.comm import CommModel, bytes_communicated, training_bytes
from spikepipe_jax.schedule.delays import (delays_for, delays_from_timeline, fully_pipelined_timeline,
                                           one_f_one_b_timeline, schedule_timeline)
from spikepipe_jax.schedule.exact import SearchLimit, exact_schedule
from spikepipe_jax.schedule.graph import (Edge, Task, TaskGraph, graph_from_json, graph_from_tasks,
                                          graph_to_json, is_training_graph, layerpipe_delays,
                                          make_graph, pipeline_retiming, random_graph, retime,
                                          stage_map, toy_training_tasks, update_delays,
                                          with_update_distances)
from spikepipe_jax.schedule.listsched import modulo_schedule, spikepipe_schedule, split_plan
from spikepipe_jax.schedule.validate import (Placement, Schedule, normalize, placements_from_json,
                                             schedule_from_json, schedule_violations, validate)

__all__ = [
    "Task", "Edge", "TaskGraph", "make_graph", "graph_from_json", "graph_to_json",
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
