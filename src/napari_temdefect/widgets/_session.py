"""State shared by the dock widgets of one viewer: the loaded model, the last predictions,
the weights before fine-tuning, and the training set being built.

The Inference widget loads the model here; the Fine-tune widget retrains that same object in
place; the Corrections widget adds entries to the training set.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from psygnal import Signal

_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()



@dataclass(eq=False)
class Session:
    model: object | None = None            # napari_temdefect.models.Model
    model_key: str | None = None           # what it was loaded from (name or path)
    predictions: dict = field(default_factory=dict)   # image layer name -> PredictionResult
    training_set: object | None = None     # napari_temdefect.training.TrainingSet
    weights_before_finetune: dict | None = None
    #: settings the Inference widget last used, so a re-run after fine-tuning matches
    inference_settings: dict = field(default_factory=dict)
    #: True while the Fine-tune widget trains ``model`` on another thread
    training: bool = False
    #: True while the Inference widget runs ``model`` on another thread (Fine-tune waits)
    predicting: bool = False
    #: the Inference panel's Threshold box as it is now (Fine-tune > Save model records it)
    panel_threshold: float | None = None


class SessionSignals:
    # emitted with the Session; widgets connect to refresh their state
    model_changed = Signal(object)
    training_set_changed = Signal(object)
    #: a new prediction was written into ``<image> defects`` (the image layer's name)
    prediction_shown = Signal(str)
    #: ``Session.predicting`` changed (Fine-tune's Train and Revert wait for inference)
    predicting_changed = Signal(object)


_SIGNALS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def get_session(viewer) -> Session:
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


def get_signals(viewer) -> SessionSignals:
    if viewer not in _SIGNALS:
        _SIGNALS[viewer] = SessionSignals()
    return _SIGNALS[viewer]


def set_predicting(viewer, value: bool) -> None:
    """Mark the viewer's model as in use by a prediction (or free), and tell the panels."""
    session = get_session(viewer)
    session.predicting = bool(value)
    get_signals(viewer).predicting_changed.emit(session)
