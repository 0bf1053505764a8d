"""Hyper-parameters and learning-rate schedules as JSON, for checkpoints.

A schedule ``lr`` is written as ``{"schedule": to_config(), "state":
state_dict()}``; a schedule held by several groups is written in each, the
later ones with ``"shared_with": <first group>``, and is read back as one
object.
"""
import numbers
import operator

from .schedules import from_config

__all__ = ["jsonable", "schedule_to_json", "schedule_from_json", "same_config"]


def jsonable(value, at):
    """``value`` (a hyper-parameter) as JSON types; ValueError naming ``at``
    for anything else."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [jsonable(v, at) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: jsonable(v, at) for k, v in value.items()}
    raise ValueError(f"{at}: {value!r} cannot be written to a checkpoint (JSON types only)")


def schedule_to_json(schedule, index):
    """Group ``index``'s schedule ``lr`` as ``{"schedule": ..., "state": ...}``."""
    if not (hasattr(schedule, "to_config") and hasattr(schedule, "state_dict")):
        raise ValueError(f"param group {index}: lr {schedule!r} is a callable without "
                         "to_config(); use a fastadapt.schedules schedule to checkpoint it")
    try:
        return {"schedule": schedule.to_config(), "state": dict(schedule.state_dict())}
    except TypeError as exc:
        raise ValueError(f"param group {index}: lr schedule cannot be written to a "
                         f"checkpoint: {exc}") from None


def schedule_from_json(lr, at, earlier):
    """The schedule a group's JSON ``lr`` (a dict) describes, as ``(config,
    state, rebuilt schedule, index of the group it is shared with or None)``;
    ``earlier`` holds that tuple (or None) for the groups before this one.
    ValueError naming ``at`` for a malformed one."""
    shared_with = lr.get("shared_with")
    if set(lr) - {"shared_with"} != {"schedule", "state"}:
        raise ValueError(f"{at}: a schedule lr must be {{'schedule': config, "
                         f"'state': state}}, got keys {sorted(lr)}")
    if shared_with is not None:
        if isinstance(shared_with, bool) or not isinstance(shared_with, int) \
                or not 0 <= shared_with < len(earlier) or earlier[shared_with] is None \
                or earlier[shared_with][3] is not None:
            raise ValueError(f"{at}: lr 'shared_with' must name an earlier group holding "
                             f"its own schedule, got {shared_with!r}")
        first = earlier[shared_with]
        if (lr["schedule"], lr["state"]) != first[:2]:
            raise ValueError(f"{at}: lr schedule is shared with group {shared_with} but "
                             "its config or state differs from that group's")
        return first[0], first[1], first[2], shared_with
    try:
        schedule = from_config(lr["schedule"])
        schedule.load_state_dict(lr["state"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{at}: bad lr schedule: {exc}") from None
    return lr["schedule"], lr["state"], schedule, None


def same_config(schedule, config):
    """Whether ``schedule``'s configuration is ``config``."""
    try:
        return schedule.to_config() == config
    except (TypeError, ValueError):
        return False
