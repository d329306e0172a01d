"""Answer schemas for the versioned prompts (pydantic models, looked up by name).

A prompt file names its schema (`schema: JudgeAnswer`); `get_schema(name)` resolves it so
prompt files stay plain data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vlens.errors import ConfigError


class JudgeAnswer(BaseModel):
    """The per-sample judge: what the attended (non-black) region shows and how focused it is."""

    model_config = ConfigDict(extra="ignore")

    description: str = Field(description="what is visible in the non-black region")
    justification: str = Field(description="why the focus score was given")
    focus_score: float = Field(
        ge=0,
        le=5,
        description="0 = scattered or irrelevant attention, "
        "5 = fully on the object, no distractions",
    )
    object_visible: Literal["none", "partial", "full"] = Field(
        description="how much of the predicted object is visible"
    )
    distractors: list[str] = Field(
        default_factory=list, description="other things visible that are not the object"
    )


class Caption(BaseModel):
    """A one-sentence description of the image."""

    model_config = ConfigDict(extra="ignore")

    caption: str = Field(min_length=1, description="one sentence describing the image")


class UtilityGuess(BaseModel):
    """Guess the vision model's prediction among k offered classes (explanation utility)."""

    model_config = ConfigDict(extra="ignore")

    guess: str = Field(min_length=1, description="one of the offered class names, verbatim")
    reason: str = Field(default="", description="short reason")


class ConceptScores(BaseModel):
    """Per-concept presence scores in [0, 1] for the non-black region."""

    model_config = ConfigDict(extra="ignore")

    scores: dict[str, float] = Field(description="concept -> score in [0, 1]")


SCHEMAS: dict[str, type[BaseModel]] = {
    "JudgeAnswer": JudgeAnswer,
    "Caption": Caption,
    "UtilityGuess": UtilityGuess,
    "ConceptScores": ConceptScores,
}


def get_schema(name: str) -> type[BaseModel]:
    """The pydantic model registered under `name` (clear error when unknown)."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ConfigError(
            f"unknown answer schema {name!r}; known: {', '.join(sorted(SCHEMAS))}"
        ) from None


class SliceDescription(BaseModel):
    """What a failure slice's members share that the comparison images do not (a contact
    sheet: members on the top row, correctly handled images of the class below)."""

    model_config = ConfigDict(extra="ignore")

    shared: str = Field(min_length=1, max_length=300,
                        description="one short phrase: what the TOP-row images have in common")
    differences: list[str] = Field(
        default_factory=list, max_length=5,
        description="short phrases: how the top row differs from the bottom row")


class RewrittenSentence(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1, description="the reworded sentence")
    finding_ids: list[str] = Field(min_length=1,
                                   description="exactly the finding ids of the input sentence")


class NarrativeRewrite(BaseModel):
    """The narrative's sentences reworded (same claims, same numbers, same finding ids)."""

    model_config = ConfigDict(extra="ignore")

    sentences: list[RewrittenSentence] = Field(min_length=1)


SCHEMAS.update({"SliceDescription": SliceDescription, "NarrativeRewrite": NarrativeRewrite})
