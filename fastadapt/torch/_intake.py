"""What a flat buffer of fastadapt.torch takes in from the model between
steps: the gradients autograd makes (adopted into the flat buffer inside the
backward), and at each step what the caller did since the last one, checked
before anything is written and then gathered into the flat buffers
(gradients that are not the buffer's views, parameters whose ``.data`` was
replaced, ``optimizer.state`` entries removed to reset a parameter's state).

:class:`StepIntake` is a base class of :class:`~fastadapt.torch._bucket._Bucket`
and works on its attributes (``params``, ``grad_views``, ``param_views``,
``entries``, ...)."""
import operator
import weakref

import torch


# ----------------------------------------------------------------- gradient hooks
# Module-level functions holding a weak reference to the bucket, so a model
# never keeps its optimizer alive; not pickled with the parameters.
def _fresh_marker(ref, j):
    @torch.utils.hooks.unserializable_hook
    def hook(grad):
        bucket = ref()
        if bucket is not None and not bucket.released[j]:
            bucket.fresh[j] = bucket.params[j].grad is None
    return hook


def _fresh_adopter(ref, j):
    def hook(param):
        bucket = ref()
        if bucket is not None and bucket.fresh[j]:
            bucket.fresh[j] = False
            bucket.adopt(j)
    return hook


def _remove_hooks(handles):
    for handle in handles:
        handle.remove()


# ----------------------------------------------------------------- the intake
class StepIntake:
    """A bucket's intake of gradients, replaced parameters and cleared state."""

    def _adopt_fresh_gradients(self):
        """Hooks on each parameter that requires a gradient: when autograd
        allocates a fresh ``.grad`` (it was None before this accumulation),
        the gradient is copied into the flat buffer's view and ``.grad``
        re-pointed there, inside the backward, before anyone else can hold
        the fresh tensor. A ``.grad`` that existed before (the view, or a
        tensor the user assigned) is never replaced."""
        self.fresh = [False] * len(self.params)
        ref = weakref.ref(self)
        handles = []
        for j, p in enumerate(self.params):
            if p.requires_grad and p.is_leaf:
                handles.append(p.register_hook(_fresh_marker(ref, j)))
                handles.append(p.register_post_accumulate_grad_hook(_fresh_adopter(ref, j)))
        weakref.finalize(self, _remove_hooks, handles)

    def adopt(self, j):
        """Parameter ``j``'s fresh gradient into its view, and ``.grad`` the view
        (see :meth:`_adopt_fresh_gradients`); a gradient the view cannot hold
        (sparse, another shape or dtype, one with a graph) is left alone."""
        p, view = self.params[j], self.grad_views[j]
        g = p.grad
        if (g is None or g is view or g.requires_grad or g.layout != torch.strided
                or g.shape != view.shape or g.dtype != view.dtype or g.device != view.device):
            return
        with torch.no_grad():
            view.copy_(g)
        p.grad = view

    def scan(self):
        """Check the parameters and gradients before anything is written.

        Returns ``(present, replaced, copies, cleared)``: which parameters
        have a gradient (``None``: all of them), which had ``.data`` replaced
        (same shape), which gradients must be copied into the flat buffer and
        whose ``optimizer.state`` was cleared (:meth:`cleared`). The common
        cases (nothing replaced or cleared; every gradient the flat buffer's
        view) are three list comprehensions and three C-level comparisons.
        """
        params = self.params
        replaced = self.replaced()
        cleared = self.cleared()
        grads = [p.grad for p in params]
        if all(map(operator.is_, grads, self.grad_views)):
            return None, replaced, [], cleared
        gi = self.group_index
        present, copies = [], []
        for j, g in enumerate(grads):
            present.append(g is not None)
            if g is None or g is self.grad_views[j]:
                continue
            if g.layout != torch.strided:     # not in the runs: fastadapt.torch._sparse updates it
                present[-1] = False
                continue
            if g.shape != self.shapes[j]:
                raise ValueError(f"param group {gi}, parameter {self.indices[j]}: gradient of "
                                 f"shape {tuple(g.shape)} for a parameter of shape "
                                 f"{tuple(self.shapes[j])}")
            if not (g.data_ptr() == self.grad_ptrs[j] and g.is_contiguous()
                    and g.dtype == self.param_dtype):
                copies.append(j)
        return present, replaced, copies, cleared

    def replaced(self):
        """The parameters whose ``.data`` was replaced (same shape, dtype and
        device: anything else raises ValueError) since they were re-pointed."""
        ptrs = [p.data_ptr() for p in self.params]
        if ptrs == self.param_ptrs:
            return []
        replaced = []
        for j, (ptr, p) in enumerate(zip(ptrs, self.params)):
            if ptr != self.param_ptrs[j]:
                self._check_replaced(j, p)
                replaced.append(j)
        return replaced

    def adopt_replaced(self, replaced):
        """Copy the replaced parameters' values into their slots (and their
        master copies: the new values are the truth) and re-point their
        ``.data`` there; the values the model sees do not change."""
        for j in replaced:
            p = self.params[j]
            self.param_views[j].copy_(p.data)
            if self.master_flat is not None:
                self.write_master(j, p.data)
            p.data = self.param_views[j]

    def _check_replaced(self, j, p):
        where = f"param group {self.group_index}, parameter {self.indices[j]}"
        if p.shape != self.shapes[j]:
            raise ValueError(f"{where} changed shape from {tuple(self.shapes[j])} to "
                             f"{tuple(p.shape)} after the optimizer was built; build a new "
                             "optimizer for the new shapes")
        if p.dtype != self.param_dtype or p.device != self.device:
            raise ValueError(f"{where} moved from {self.device}/{self.param_dtype} to "
                             f"{p.device}/{p.dtype} after the optimizer was built; move or "
                             "convert the model before building the optimizer")

    def gather(self, scan):
        """Copy what ``scan`` found (replaced parameters, gradients that are not
        the flat buffer's views) into the buffers; the values the model sees,
        and the gradient tensors, do not change."""
        present, replaced, copies, cleared = scan
        self.adopt_replaced(replaced)
        self.forget(cleared)
        if copies:      # .grad stays the caller's tensor, read and never written
            torch._foreach_copy_([self.grad_views[j] for j in copies],
                                 [self.params[j].grad for j in copies])

    def cleared(self):
        """The parameters whose ``optimizer.state`` entry was removed or
        replaced by an empty dict since it was shown (torch's ways to reset a
        parameter's state: ``state.clear()``, ``state.pop(p)``, ``del
        state[p]``, ``state[p] = {}``); a non-empty dict of another origin
        raises ValueError. One C-level comparison when none was."""
        now = list(map(self.owner.state.get, self.params))
        if all(map(operator.is_, now, self.entries)):
            return []
        cleared = []
        for j, (entry, shown) in enumerate(zip(now, self.entries)):
            if entry is shown:
                continue
            if not self.published[j]:      # e.g. {} made by reading state[p]: nothing to reset
                self.entries[j] = entry
                continue
            if entry:
                raise ValueError(
                    f"optimizer.state of param group {self.group_index}, parameter "
                    f"{self.indices[j]} was replaced by a dict with keys "
                    f"{sorted(map(str, entry))}; fastadapt.torch keeps the state in flat "
                    "buffers: reset it with optimizer.state.pop(p) (or state[p] = {}, "
                    "state.clear()), or set it with load_state_dict")
            cleared.append(j)
        return cleared

    def forget(self, cleared):
        """Parameters ``cleared`` start from fresh state at their next step,
        as torch's do after their state was removed."""
        if not cleared:
            return
        group = self.owner.param_groups[self.group_index]
        for j in cleared:
            self.reset(j, j, group)
            self.published[j] = False
            self.entries[j] = None
        self.update_uniform()
