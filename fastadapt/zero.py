r"""ZeRO-style sharded optimizer state over ``torch.distributed``.

:class:`ZeroRedundancyOptimizer` follows the contract of
``torch.distributed.optim.ZeroRedundancyOptimizer`` for the
``fastadapt.torch`` optimizers. It is exported as
``fastadapt.torch.ZeroRedundancyOptimizer``; importing this module imports
torch. It is the ``fastadapt.torch`` core given two values: each flat
buffer's span is this rank's shard, and the ranks agree through collectives
(``fastadapt/torch/_zero.py``, ``_zero_collectives.py``, ``_zero_checkpoint.py``).

How it works
------------
Every rank packs the parameters into the same flat buffers as
``fastadapt.torch`` (one per group, device and dtype, 64-byte aligned
segments), padded at the end so the buffer splits into ``world_size`` equal,
contiguous shards. Rank ``r`` keeps the optimizer state of shard ``r`` only::

    shard_length = ceil(length / (world_size * align)) * align
    shard r      = [r * shard_length, (r + 1) * shard_length)

``align`` is one cache line of the parameters' dtype (16 float32 elements, 32
bfloat16 ones), or the 8-bit state's unit where a bucket keeps it (256
elements for ``state_dtype="int8"``'s blocks, 32 for ``"int8c"``'s groups:
multiples of the line), so that every shard is whole blocks and quantizes as
one process does; the state of a rank is therefore ``1/world_size`` of the
whole, plus less than ``align`` elements of padding per state array. With
``master_weights=True`` (16-bit parameters) the float32 master copy is
sharded the same way. A step on every rank:

1. checks the parameters and gradients (as ``fastadapt.torch``) and copies
   gradients that are not views of the flat gradient buffer into it;
2. with ``reduce_gradients=True``: one all-reduce (MAX) of GradScaler's
   ``found_inf`` flag and of which parameters have a gradient, so every rank
   skips, or steps the same parameters (a parameter with a gradient on some
   rank only counts zeros elsewhere, as DDP's unused parameters); then a
   ``reduce_scatter`` of the flat gradient buffer, so that the local shard
   holds the sum of every rank's gradients, divided by the world size (DDP's
   average), ZeRO-2 style. Without it, the ranks' gradients are DDP's, the
   same everywhere, and so is which parameters have one: only GradScaler's
   ``found_inf``, when it passes one, is all-reduced (MAX). When another
   rank found an inf, the agreed flag is written into this rank's
   GradScaler's own flags, so every rank's ``update()`` reduces its scale
   alike;
3. with ``max_grad_norm``: the sum of squares of the local shard's
   gradients, all-reduced (SUM, float64), gives the global norm on every rank;
4. the fused kernel of the rule over the local shard only (on the master
   copy's shard with ``master_weights``, rounding the parameters' shard from
   it in the same pass; per-parameter step
   counts and scalar state, NAdam's ``mu_product``, ASGD's ``eta`` and
   ``mu``, are kept for every parameter on every rank, since they depend on
   the step count only);
5. the parameters gathered in place, straight into the flat parameter buffer
   (no per-tensor copies): one ``all_gather`` per flat buffer (NCCL), or on
   gloo, whose allgather is three times slower than its broadcasts here, one
   broadcast of each rank's shard, all in flight at once.

Elementwise rules do not depend on where a shard starts, so the parameters
after any number of steps are bit-identical to the single-process
``fastadapt.torch`` optimizer's, whatever the world size. Clipping sums the
squares in another order (per shard, then across ranks): its coefficient
agrees to float32 rounding.

With DDP the gradients are already averaged: keep ``reduce_gradients=False``.
Without DDP, ``reduce_gradients=True`` averages them here, in the flat
gradient buffer; afterwards a ``.grad`` that is that buffer's view (see
:mod:`fastadapt.torch`) holds the average only on the local shard (elsewhere
the rank's own gradients), and a ``.grad`` of the caller's own is unchanged.

Checkpoints
-----------
* ``consolidate_state_dict(to=0)`` (every rank) then ``state_dict()`` (rank
  ``to``): the full state in torch's format, loadable into the single-process
  ``fastadapt.torch`` optimizer or ``torch.optim`` of the same algorithm.
  ``load_state_dict`` (every rank, the full dict) keeps each rank's shard.
* ``save_sharded(directory)`` / ``load_sharded(directory)`` (every rank): one
  file per rank, written atomically, then a manifest written by rank 0 once
  every rank's file is complete. Loading works with another world size
  (each rank reads the old shards that overlap its new one).
* Both first bring the master copy up to date with parameters written in
  place or whose ``.data`` was replaced since the last step.

Agreement across ranks
----------------------
The construction, ``add_param_group``, ``consolidate_state_dict``,
``save_sharded`` and ``load_sharded`` end their local work (every check,
every file read) with one small all-reduce: a failure flag and a digest of
what must be the same on every rank (the options, each group's parameters'
layout and hyper-parameters; on load, the checkpoint read). When any rank
failed or the digests differ, every rank raises (ValueError; RuntimeError
for a failed save), naming the rank and its error or what differs and each
rank's value, and nothing changes. The step gains no collective for this:
hyper-parameters changed between steps (a scheduler, ``max_grad_norm``) are
not compared, and must change alike on every rank.

Faults
------
A collective that fails (a rank died, or raised and left the step) raises
:class:`CollectiveError` on the ranks still running, within the process
group's timeout; the message says which collective failed. A failed sharded
save leaves the previous complete checkpoint in place.
"""
from .torch._zero import ZeroRedundancyOptimizer
from .torch._zero_checkpoint import KIND, MANIFEST, SHARDED_FORMAT  # noqa: F401  (the file format)
from .torch._zero_collectives import CollectiveError

__all__ = ["ZeroRedundancyOptimizer", "CollectiveError"]
