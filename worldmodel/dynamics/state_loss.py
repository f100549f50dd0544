"""The state head trained with a world model (``state_head=True``, our extension of every paper).

``make_state_head`` builds the model's ``ObjectHead`` (``dynamics/heads.py``): the end effector
relative to where it was when the rollout started (proprioception), read off the features or, with
``state_arm="actions"``, integrated from the actions; and ``head(features, query)``, the object
that was at ``query`` when the rollout started. Its normalisers are fixed to PushTable's workspace
(positions in metres, about ±0.2), so they need no data pass and a checkpoint holds everything.

``state_loss`` is ``LatentDynamics.state_loss``: see its docstring here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from worldmodel.data.batch import Batch
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.heads import ObjectHead

_POS_SCALE = 0.1  # metres: the state head's unit (PushTable's workspace is about ±0.2 m)
_EE_MEAN = (0.0, 0.0, 0.08)  # the end effector's mean height above the table


def make_state_head(model: LatentDynamics) -> ObjectHead:
    """The ``ObjectHead`` a model with ``state_head=True`` trains (its config's ``state_hidden``
    and ``state_arm``), on ``model.feature_dim`` features."""
    c = model.config
    arm = c.action_dim if c.state_arm == "actions" else 0
    objects = c.state_objects == "actions"
    head = ObjectHead(
        model.feature_dim,
        c.state_hidden,
        end_effector=True,
        ee_relative=True,
        arm_actions=arm,
        object_actions=objects,
    )
    head.pos_scale.fill_(_POS_SCALE)
    head.ee_mean.copy_(torch.tensor(_EE_MEAN))
    head.ee_scale.fill_(_POS_SCALE)
    return head


def state_loss(model: LatentDynamics, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    """The state head's loss on an open-loop rollout of the model along the recorded actions.

    ``initial`` on the first ``n_past`` frames, then ``step`` (sampling the prior, as the dream
    does) with the recorded actions, gradients through the whole rollout; at each state from
    the last context frame on, the head regresses the recorded end effector ``states[..., :3]``
    and, where the batch has ``objects``, every present object's position from its position at
    the last context frame (the query). Each term is a squared error in units of
    ``_POS_SCALE`` (10 cm), averaged over rows.

    With ``state_query_noise`` the queries' xy are jittered (one draw per object and window, in
    training only): a head given exact queries learns to echo them, and a planner re-anchored
    mid-episode queries with the target's *start* position, so that head answers where the
    target was (measured by ``worldmodel plan``'s prediction check: 6.8-7.7 cm off for JEPA on
    the quick demo's settings, 2.4-3.8 cm with 5 cm of noise).

    Why open-loop: PlaNet and Dreamer train their reward heads with the model so the latent
    keeps what the task needs; a head on teacher-forced (posterior) features would teach the
    posterior, while the dream and the planner run the prior on the model's own predictions.
    BatchNorm layers run on their running statistics during this rollout (and do not update
    them), as they do in the dream: with batch statistics of one predicted frame per row the
    head would learn features that the eval-mode model never produces (measured: a head
    trained that way was worse than "the object stays put" in eval mode).

    With ``state_arm="actions"`` the integrated arm (``ObjectHead.arm_rollout`` from the recorded
    arm at the last context frame) is regressed too, and ``state_ee_cm`` is its error. The
    features' reading keeps its term: the integrated arm reads no features, so it passes the
    world model no gradient, and without the features' term the latent stopped carrying the
    arm, which the objects' motion depends on (measured: the dreamed target at 10 steps 7.05
    instead of 5.99 cm for svg-lp in the quick demo, 6.77 instead of 4.47 for JEPA).

    With ``state_objects="actions"`` one more term, on the recorded states alone (it reads no
    features, so it leaves the world model's gradient as it was): the contact model
    (``ObjectHead.object_step``) predicts every recorded step's object move from the recorded arm
    before and after it, the action and the previous action (one step, teacher-forced, as the
    model of the true states in ``benchmarks/state_model_control.py`` that pushed;
    ``state_contact_cm``).

    Where the batch has ``transitions`` (recorded steps drawn from the whole training data by the
    trainer, ``DynamicsConfig.state_batch`` of them: ``data/transitions.py``), the integrated arm
    and the contact model are also fitted one step at a time on those (``state_step_ee_cm``,
    ``state_step_contact_cm``): the windows alone give them too few contacts.

    Returns ``(loss, metrics)``: ``state_ee_cm`` and ``state_obj_cm`` (RMS errors in cm), with
    ``state_objects="actions"`` also ``state_contact_cm``.
    """
    if model.state_head is None:
        raise ValueError("state_loss: the model has no state head (state_head=False)")
    if "states" not in batch:
        raise ValueError(
            "state_head=True needs data that records states (the end effector); this data has "
            "none (PNG folders): train with state_head=false"
        )
    c = model.config
    frames, actions = batch["frames"], batch["actions"].to(model.device, torch.float32)
    k, t = c.n_past, frames.shape[1]
    with _norms_frozen(model):
        state = model.initial(frames[:, :k].to(model.device), actions[:, : k - 1])
        _, ahead = model.rollout(state, actions[:, k - 1 : t - 1], decode=False)
    f = torch.cat([model.features(state)[:, None], ahead], 1).float()  # (B, S, F): frames k-1 .. t-1
    head = model.state_head
    ee_true = batch["states"][:, k - 1 :, :3].to(f)
    # Read off every state's features, the last context frame's included: trained for every
    # head, so the latent carries the arm (which the objects' motion depends on).
    b, steps = f.shape[:2]
    start = ee_true[:, :1].expand(b, steps, 3).flatten(0, 1)
    ee_err = (head.end_effector(f.flatten(0, 1), start).view(b, steps, 3) - ee_true) / _POS_SCALE
    loss = ee_err.pow(2).sum(-1).mean()
    if head.arm_from_actions:  # and integrated from the recorded arm at the last context frame
        previous = actions[:, k - 2] if k >= 2 else torch.zeros_like(actions[:, 0])
        moved = head.arm_rollout(ee_true[:, 0], previous, actions[:, k - 1 : t - 1])
        ee_err = (moved - ee_true[:, 1:]) / _POS_SCALE  # the arm planners and dreams use
        loss = loss + ee_err.pow(2).sum(-1).mean()
    metrics = {"state_ee_cm": ee_err.detach().pow(2).sum(-1).mean().sqrt() * 100 * _POS_SCALE}
    if "objects" in batch:
        objects = batch["objects"].to(f)  # (B, T, K, 3), NaN rows: absent
        target = objects[:, k - 1 :]
        query = objects[:, k - 1 : k].expand_as(target)
        if c.state_query_noise > 0 and model.training:  # xy only: the table's height is known
            jitter = torch.randn_like(query[:, :1, :, :2]) * c.state_query_noise  # one per object
            query = query + torch.cat([jitter, torch.zeros_like(jitter[..., :1])], -1)
        present = torch.isfinite(target).all(-1) & torch.isfinite(query).all(-1)  # (B, S, K)
        rows = f.unsqueeze(2).expand(-1, -1, target.shape[2], -1)[present]
        obj = f.new_zeros(())
        if len(rows):
            err = (head(rows, query[present]) - target[present]) / _POS_SCALE
            obj = err.pow(2).sum(-1).mean()
            loss = loss + obj
        metrics["state_obj_cm"] = obj.detach().sqrt() * 100 * _POS_SCALE
        if head.objects_from_actions:
            contact = _contact_term(head, batch, objects, actions)
            loss = loss + contact
            metrics["state_contact_cm"] = contact.detach().sqrt() * 100 * _POS_SCALE
    if "transitions" in batch and head.arm_from_actions:
        terms = _transition_terms(head, batch["transitions"])
        for name, term in terms.items():
            loss = loss + term
            metrics[name] = term.detach().sqrt() * 100 * _POS_SCALE
    return loss, metrics


def _transition_terms(head: ObjectHead, steps: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean squared one-step errors (units of ``_POS_SCALE``) of the integrated arm and, for a
    head that integrates the objects, of the contact model, on recorded steps
    (``RecordedTransitions.sample``)."""
    arm, nxt = steps["arm"].float(), steps["arm_next"].float()
    action, previous = steps["action"].float(), steps["previous"].float()
    moved = head.arm_step(arm, action, previous)
    terms = {"state_step_ee_cm": ((moved - nxt) / _POS_SCALE).pow(2).sum(-1).mean()}
    if head.objects_from_actions and "objects" in steps:
        obj, obj_next = steps["objects"].float(), steps["objects_next"].float()
        present = torch.isfinite(obj).all(-1) & torch.isfinite(obj_next).all(-1)  # (N, K)
        i, k = present.nonzero(as_tuple=True)  # the objects there before and after: one row each
        pred = head.object_step(obj[i, k], arm[i], nxt[i], action[i], previous[i])
        err = ((pred - obj_next[i, k]) / _POS_SCALE).pow(2).sum(-1)
        terms["state_step_contact_cm"] = err.mean() if len(err) else err.new_zeros(())
    return terms


def _contact_term(head: ObjectHead, batch: Batch, objects: Tensor, actions: Tensor) -> Tensor:
    """The contact model's mean squared one-step error (units of ``_POS_SCALE``) over the window:
    ``objects`` ``(B, T, K, 3)``, ``actions`` ``(B, T, A)`` (see ``state_loss``)."""
    present = torch.isfinite(objects).all(-1)  # (B, T, K)
    moves = present[:, 1:] & present[:, :-1]  # (B, T-1, K): the object there before and after
    moves[:, 0] = False  # the window's first step: the action before it is not in the batch
    if not moves.any():
        return objects.new_zeros(())
    i, s, j = moves.nonzero(as_tuple=True)
    arm = batch["states"][..., :3].to(objects)
    nxt = head.object_step(objects[i, s, j], arm[i, s], arm[i, s + 1], actions[i, s], actions[i, s - 1])
    return ((nxt - objects[i, s + 1, j]) / _POS_SCALE).pow(2).sum(-1).mean()


@contextlib.contextmanager
def _norms_frozen(module: nn.Module):
    """BatchNorm layers of ``module`` in eval mode (running statistics, not updated) inside."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()
