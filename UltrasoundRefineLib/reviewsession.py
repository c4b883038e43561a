"""One reviewer walking one round's review queue, as the Slicer panel does it, without Qt or MRML.

The review is only cheap if every key press does what the reviewer saw, so the session records a
decision only for the suggestion that is on screen (:meth:`ReviewSession.shown` says what is; moving,
a failed load, a closed scene or a deleted node clear it), ignores key presses in the first moments
after a suggestion appears (a held or bounced key does not decide on what nobody looked at), and knows
the mask it showed, so that an edit is never stored unchanged nor lost by moving on.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from UltrasoundRefineLib.errors import UltrasoundRefineError

#: Key presses this soon after a suggestion appears are ignored (seconds).
SETTLE_S = 0.3

#: Review actions and their keys (the panel connects them while it is shown and shows them on its
#: buttons). None of them is a key of Slicer's slice views (r reset view, b/f previous/next slice, g, t,
#: v, arrows, brackets), which a main-window shortcut would take over; "A" accepts and moves on, the
#: common case.
REVIEW_SHORTCUTS = {
    "acceptNext": "A",
    "accept": "Shift+A",
    "reject": "X",
    "next": "N",
    "back": "P",
    "edit": "E",
}
#: The decision and whether to move on, of each deciding action.
REVIEW_DECISIONS = {"acceptNext": ("accepted", True), "accept": ("accepted", False), "reject": ("rejected", False)}
#: What the panel says when an action fails, by :meth:`ReviewDesk.act` action ("edit" is the panel's own).
REVIEW_ACTIONS = {
    **{action: "Failed to record the decision." for action in REVIEW_DECISIONS},
    "next": "Failed to show the suggestion.",
    "back": "Failed to show the suggestion.",
    "save": "Failed to save the edited mask.",
}
#: The panel's button (its name in the module's .ui file) for each review action: a click does what
#: the action's key does ("save" has no key: it is a deliberate click).
REVIEW_BUTTONS = {
    "acceptNext": "acceptNextButton",
    "accept": "acceptButton",
    "reject": "rejectButton",
    "next": "nextButton",
    "back": "backButton",
    "edit": "editButton",
    "save": "saveEditedButton",
}
#: What each review key does, in the words the module's help and the README use.
REVIEW_KEY_WORDS = {
    "acceptNext": "accept and next",
    "accept": "accept",
    "reject": "reject",
    "next": "next",
    "back": "previous",
    "edit": "edit in Segment Editor",
}


def keys_help() -> str:
    """The review keys in one line ("A accept and next, Shift+A accept, ..."), for the module's help."""
    return ", ".join(f"{REVIEW_SHORTCUTS[action]} {REVIEW_KEY_WORDS[action]}" for action in REVIEW_SHORTCUTS)


#: Keys that Slicer's slice views handle themselves (vtkMRMLSliceIntersectionWidget).
SLICE_VIEW_KEYS = {"R", "B", "F", "G", "T", "V", "Left", "Right", "Up", "Down", "[", "]", "{", "}"}
#: Actions that decide or move on: ignored in the first moments after a suggestion appears.
SETTLING_ACTIONS = {"acceptNext", "accept", "reject", "next"}


class ReviewError(UltrasoundRefineError):
    """A review action that cannot be done now (nothing on screen, an unchanged edit, ...)."""


def reviewer_name(text: Optional[str]) -> str:
    """The reviewer's name as typed in the panel, trimmed; refused when empty (every decision records
    who took it)."""
    name = (text or "").strip()
    if not name:
        raise ReviewError("Enter your initials as reviewer first: every decision records who took it.")
    return name


class ReviewSession:
    """Walks a snapshot of one round's review queue (undecided suggestions, likely-wrong first).

    Decided suggestions are not in the queue, so a review that stopped resumes where it was. The
    snapshot stays fixed while reviewing, so Back can return to what was just decided and change it
    (the workspace keeps every decision; the latest counts).
    """

    def __init__(self, workspace, round: Optional[int] = None, *, clock: Callable[[], float] = time.monotonic):
        self.workspace = workspace
        self.queue = list(workspace.review_queue(round))
        self.round = self.queue[0].round if self.queue else (round if round is not None else workspace.latest_round())
        self.position = 0
        self.decisions: dict[int, str] = {}  # suggestion id -> decision taken in this session
        self._clock = clock
        self._shownId: Optional[int] = None
        self._shownAt = 0.0
        self._shownMask: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ where we are

    def current(self):
        return self.queue[self.position] if 0 <= self.position < len(self.queue) else None

    @property
    def atEnd(self) -> bool:
        return self.position >= len(self.queue)

    def next(self):
        self.position = min(self.position + 1, len(self.queue))
        self.hidden()
        return self.current()

    def back(self):
        self.position = max(self.position - 1, 0)
        self.hidden()
        return self.current()

    # ------------------------------------------------------------------ what is on screen

    def shown(self, mask: np.ndarray) -> None:
        """The current suggestion is now on screen with ``mask`` (the one the reviewer judges)."""
        suggestion = self.current()
        if suggestion is None:
            raise ReviewError("there is no suggestion to show: the review queue is done")
        self._shownId = suggestion.id
        self._shownAt = self._clock()
        self._shownMask = np.array(mask, dtype=bool, copy=True)

    def hidden(self) -> None:
        """Nothing of the queue is on screen any more (moved on, load failed, scene closed, node deleted)."""
        self._shownId = None
        self._shownMask = None

    @property
    def onScreen(self):
        """The suggestion the reviewer sees, or None."""
        current = self.current()
        return current if current is not None and current.id == self._shownId else None

    def acceptsKeys(self) -> bool:
        """True once a suggestion has been on screen for :data:`SETTLE_S`."""
        return self.onScreen is not None and self._clock() - self._shownAt >= SETTLE_S

    def ignoresKey(self, action: str) -> bool:
        """True when a key press for ``action`` (a :data:`REVIEW_SHORTCUTS` name) is to be dropped: a
        deciding or moving key while the suggestion on screen has only just appeared (a held or bounced
        key was not about it). With nothing on screen every key goes through: A and X then do nothing
        and N shows a suggestion."""
        return action in SETTLING_ACTIONS and self.onScreen is not None and not self.acceptsKeys()

    def nextShowsAgain(self, loadFailed: bool) -> bool:
        """True when N should show the current suggestion again rather than move on: it left the
        screen (scene closed, node deleted) without being decided on. One whose loop failed to load
        (``loadFailed``) is moved past."""
        return self.onScreen is None and self.current() is not None and not loadFailed

    def editPending(self, readMask: Callable[[], np.ndarray]) -> bool:
        """True when the mask on screen, as ``readMask()`` returns it now, differs from the one shown
        (an unsaved edit). A mask that cannot be read (e.g. its segment was deleted in the Segment
        Editor) counts as an edit: it is never dropped silently."""
        if self.onScreen is None:
            return False
        try:
            return self.maskChanged(readMask())
        except Exception:
            logging.getLogger(__name__).exception("the mask on screen could not be read")
            return True

    def maskChanged(self, mask) -> bool:
        """True when ``mask`` (the segmentation as it is now) differs from the mask that was shown."""
        if self.onScreen is None or self._shownMask is None:
            return False
        mask = np.asarray(mask, dtype=bool)
        return mask.shape != self._shownMask.shape or bool(np.any(mask != self._shownMask))

    # ------------------------------------------------------------------ deciding

    def decide(self, decision: str, user: str, editedMask=None) -> int:
        """Record a decision on the suggestion on screen, with the seconds it was shown.

        Refused (:class:`ReviewError`) when nothing is on screen, and for "edited" when the mask is
        the one suggested: that is an accept, and storing it as a human mask would pass a machine's
        mask off as a person's."""
        suggestion = self.onScreen
        if suggestion is None:
            raise ReviewError("no suggestion is on screen: show one before deciding")
        if decision == "edited":
            if editedMask is None:
                raise ReviewError("an edited decision needs the edited mask")
            if not self.maskChanged(editedMask):
                raise ReviewError("the mask was not changed: accept it instead of saving it as edited")
        seconds = max(0.0, self._clock() - self._shownAt)
        decisionId = self.workspace.decide(suggestion.id, decision, user, seconds=seconds, edited_mask=editedMask)
        self.decisions[suggestion.id] = decision
        return decisionId

    def counts(self) -> dict:
        """Decided / total of this round, by decision (from the workspace, so other reviewers count)."""
        for entry in self.workspace.status()["rounds"]:
            if entry["round"] == self.round:
                return {k: entry.get(k, 0) for k in ("suggestions", "pending", "accepted", "rejected", "edited")}
        return {"suggestions": 0, "pending": 0, "accepted": 0, "rejected": 0, "edited": 0}


class ReviewDesk:
    """One open review as the Slicer panel runs it: the workspace, the :class:`ReviewSession` walking
    its queue, the next loop read ahead (:class:`LoopPrefetcher`), and the ``display`` that puts the
    suggestion on screen (in Slicer :class:`UltrasoundRefineLib.slicerbridge.ReviewNodes`; anything with
    ``show(loop, mask, name)``, ``mask()``, ``set_mask(mask)``, ``clear()``, ``forget()``, ``shown``).

    The reviewer's actions are methods that say whether the suggestion on screen must be shown anew;
    an edit in progress is never lost: before a decision or a move ``ask()`` says what to do with it
    ("save" it as the human mask, "discard" it, or "stay" on it). ``reviewer()`` gives the reviewer's
    name (and raises when there is none), asked only when a decision is recorded.
    """

    def __init__(self, path, round: Optional[int] = None, display=None, *, clock: Callable[[], float] = time.monotonic):
        from UltrasoundRefineLib.workspace import Workspace

        self.workspace = Workspace.open(path)  # a clear error for a folder that is not a workspace
        try:
            self.session = ReviewSession(self.workspace, round, clock=clock)
        except BaseException:
            self.workspace.close()
            raise
        self.prefetcher = LoopPrefetcher(self.workspace)
        self.display = display
        self.loadFailed = False  # the current suggestion's loop could not be loaded: N moves past it
        self.onChanged: Optional[Callable[[], None]] = None

    def close(self) -> None:
        if self.display is not None:
            self.display.clear()
        self.session.hidden()
        self.prefetcher.close()
        self.workspace.close()

    def offScreen(self) -> None:
        """The display lost what it showed (scene closed, a node deleted): no decision for it any more."""
        self.session.hidden()
        if self.onChanged is not None:
            self.onChanged()

    def nodesGone(self) -> None:
        """All of the display's nodes are gone (the scene is closing): hold none of them any more."""
        if self.display is not None:
            self.display.forget()
        self.offScreen()

    def show(self):
        """Put the current suggestion on screen (whatever was there goes); the display's answer, or
        None at the end of the queue. Only once its loop and mask are shown is it on screen: a failed
        load leaves nothing to decide on (and :attr:`loadFailed` set)."""
        self.display.clear()
        self.session.hidden()
        suggestion = self.session.current()
        self.loadFailed = False
        if suggestion is None:
            return None
        self.loadFailed = True
        loop = self.prefetcher.load(suggestion.item_id)
        mask = self.workspace.suggestion_mask(suggestion.id)
        shown = self.display.show(loop, mask, name=suggestion.stem)
        self.session.shown(mask)
        self.loadFailed = False
        self.prefetcher.prefetch(self.session.queue[self.session.position + 1:])
        return shown

    def panel(self) -> "ReviewPanel":
        """What the review part of the panel shows now (:func:`review_panel` of this desk)."""
        return review_panel(self.session, self.editPending(), self.loadFailed)

    def editedMask(self) -> np.ndarray:
        if self.display is None or not self.display.shown:
            raise ReviewError("No suggestion is on screen.")
        return self.display.mask()

    def editPending(self) -> bool:
        """True when the mask on screen differs from the suggestion that was shown (an unsaved edit)."""
        if self.display is None or not self.display.shown:
            return False
        return self.session.editPending(self.editedMask)

    def discardEdit(self) -> None:
        """Put the suggested mask back on screen."""
        suggestion = self.session.onScreen
        if suggestion is not None and self.display is not None:
            self.display.set_mask(self.workspace.suggestion_mask(suggestion.id))

    def decide(self, decision: str, user: str, editedMask=None) -> int:
        return self.session.decide(decision, user, editedMask=editedMask)

    def resolveEdit(self, ask: Callable[[], str], reviewer: Callable[[], str]) -> str:
        """Before a decision or a move: "none" (no edit), "saved" (stored as the human mask),
        "discarded" (the suggested mask is back) or "stay" (the reviewer keeps working on it)."""
        if not self.editPending():
            return "none"
        answer = ask()
        if answer == "save":
            self.decide("edited", reviewer(), editedMask=self.editedMask())
            return "saved"
        if answer == "discard":
            self.discardEdit()
            return "discarded"
        return "stay"

    def decideAndMove(self, decision: str, moveOn: bool, ask, reviewer) -> bool:
        """Accept or reject the suggestion on screen (a saved edit is its decision instead), then move
        on if ``moveOn``. Nothing happens when nothing is on screen. True: show the current one."""
        if self.session.onScreen is None:
            return False
        user = reviewer()
        resolved = self.resolveEdit(ask, lambda: user)
        if resolved == "stay":
            return False
        if resolved != "saved":
            self.decide(decision, user)
        if moveOn:
            self.session.next()
        return moveOn

    def move(self, direction: str, ask, reviewer) -> bool:
        """N ("next") or P ("back"). N shows a suggestion that left the screen again rather than skip
        it, and moves past one whose loop failed to load. True: show the current one."""
        if self.resolveEdit(ask, reviewer) == "stay":
            return False
        if direction == "back":
            self.session.back()
        elif not self.session.nextShowsAgain(self.loadFailed):
            self.session.next()
        return True

    def saveEdit(self, reviewer) -> bool:
        """Store the mask on screen as the human mask (refused when unchanged) and move on."""
        if self.session.onScreen is None:
            return False
        self.decide("edited", reviewer(), editedMask=self.editedMask())
        self.session.next()
        return True

    def act(self, action: str, ask, reviewer) -> bool:
        """The reviewer's key or button ``action`` (a :data:`REVIEW_ACTIONS` name); True: show the current
        suggestion anew."""
        if action == "save":
            return self.saveEdit(reviewer)
        if action in ("next", "back"):
            return self.move(action, ask, reviewer)
        if action not in REVIEW_DECISIONS:
            raise ReviewError(f"unknown review action {action!r}; choose from {sorted(REVIEW_ACTIONS)}")
        decision, moveOn = REVIEW_DECISIONS[action]
        return self.decideAndMove(decision, moveOn, ask, reviewer)


@dataclass
class ReviewPanel:
    """What the review part of the panel shows: which buttons work, the status line and the progress."""

    decide_enabled: bool  # accept, accept-and-next, reject, edit: only with a suggestion on screen
    next_enabled: bool
    back_enabled: bool
    save_enabled: bool  # only after an edit
    status: str
    progress_value: int
    progress_maximum: int

    def buttons(self) -> dict:
        """Which of the panel's review buttons work, by their names in the panel's .ui file."""
        enabled = {**{action: self.decide_enabled for action in (*REVIEW_DECISIONS, "edit")},
                   "next": self.next_enabled, "back": self.back_enabled, "save": self.save_enabled}
        return {REVIEW_BUTTONS[action]: on for action, on in enabled.items()}


def review_panel(review: Optional[ReviewSession], editPending: bool = False, loadFailed: bool = False) -> ReviewPanel:
    """The review panel for ``review`` (None: no workspace open). ``editPending``: the mask on screen
    was edited; ``loadFailed``: the current suggestion's loop could not be loaded."""
    if review is None:
        return ReviewPanel(False, False, False, False, "No workspace open.", 0, 1)
    onScreen = review.onScreen is not None
    counts = review.counts()
    decided = counts["accepted"] + counts["rejected"] + counts["edited"]
    tally = "round {round}: {accepted} accepted, {edited} edited, {rejected} rejected, {pending} to go".format(
        round=review.round, **counts
    )
    current = review.current()
    if current is None:
        status = f"Review queue done ({tally})."
    elif not onScreen:
        why = "its loop could not be loaded: N moves on" if loadFailed else (
            "the scene was closed or a review node deleted: N shows it again"
        )
        status = f"Nothing on screen ({why}).\n{tally}"
    else:
        quality = "" if current.quality is None else f", quality {current.quality:.2f}"
        decision = review.decisions.get(current.id)
        decidedNow = "" if decision is None else f" · you decided: {decision}"
        status = (f"{review.position + 1} of {len(review.queue)} in this session: {current.stem} "
                  f"({current.producer}{quality}){decidedNow}\n{tally}")
    return ReviewPanel(
        decide_enabled=onScreen,
        next_enabled=current is not None,
        back_enabled=review.position > 0,
        save_enabled=onScreen and editPending,
        status=status,
        progress_value=decided,
        progress_maximum=max(counts["suggestions"], 1),
    )


class LoopPrefetcher:
    """Reads the loop of the next suggestion in a background thread while the reviewer looks at the
    current one, so that the next one appears at once after a key press.

    Only the file is read off the calling thread (the workspace's SQLite connection belongs to the
    thread that opened it, so the item's path is looked up before); building the MRML nodes stays
    on the GUI thread. A read that failed raises when its loop is asked for, as a direct read would.
    """

    def __init__(self, workspace, ahead: int = 1):
        self.workspace = workspace
        self.ahead = ahead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loop-prefetch")
        self._futures: dict[str, Future] = {}

    def prefetch(self, suggestions) -> None:
        """Start reading the loops of the first ``ahead`` of ``suggestions``; forget other reads."""
        from UltrasoundRefineLib.workspace.store import _load_item_loop  # the same check as Workspace.load_loop

        wanted = [s.item_id for s in list(suggestions)[: self.ahead]]
        for item_id in list(self._futures):
            if item_id not in wanted:
                self._futures.pop(item_id).cancel()
        for item_id in wanted:
            if item_id not in self._futures:
                path = str(self.workspace.item(item_id).path)
                self._futures[item_id] = self._executor.submit(_load_item_loop, path, item_id)

    def load(self, item_id: str):
        """The item's loop: the prefetched one when there is one, else read now."""
        future = self._futures.pop(item_id, None)
        if future is not None and not future.cancelled():
            return future.result()
        return self.workspace.load_loop(item_id)

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures = {}
        self._executor.shutdown(wait=False)
