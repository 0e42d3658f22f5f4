"""Recipe fields every trainer declares the same way (type, range, meaning), so that ``lr`` or
``keep_last`` mean and check the same thing in every recipe; defaults stay with each trainer."""

from __future__ import annotations

from typing import Annotated, Literal

from telos.schema import number, text

RunName = Annotated[str, text("run name")]
OutputDir = Annotated[str | None, text("run directory (default runs/<name>)")]
Resume = Annotated[str | None, text('"latest" or a checkpoint directory')]
ReportTo = Annotated[list[str], text("trackers (any accelerate knows), or none")]

LearningRate = Annotated[float, number("peak learning rate", gt=0)]
LrScheduler = Annotated[Literal["constant", "cosine", "linear"], text("lr schedule after warm-up")]
WarmupSteps = Annotated[int, number("linear warm-up steps", ge=0)]
WeightDecay = Annotated[float, number("AdamW weight decay", ge=0)]
MaxGradNorm = Annotated[float, number("gradient clipping norm", gt=0)]
SaveEvery = Annotated[int, number("checkpoint every N steps", ge=1)]
KeepLast = Annotated[int, number("checkpoints kept on disk", ge=1)]
EvalEvery = Annotated[int, number("evaluate every N steps; 0 = only at the end", ge=0)]
