"""Note lists → audio with FluidSynth, in-process and to a fixed length.

No MIDI file is written: notes go straight to a synth and every render stops at a given number of
samples, so a note that never gets its note-off cannot make rendering run forever. Each render
uses a fresh synth (cheap: with dynamic sample loading only the programs played are read),
because FluidSynth keeps releasing voices from the previous render after a reset, which would
make a stem depend on what was rendered before it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import DataError

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DRUM_CHANNEL = 9
MAX_PITCHED_TRACKS = 15

GM_PROGRAM_NAMES = {
    0: "piano",
    6: "harpsichord",
    19: "church organ",
    32: "acoustic bass",
    40: "violin",
    41: "viola",
    42: "cello",
    43: "contrabass",
    46: "harp",
    48: "string ensemble",
    52: "choir aahs",
    53: "voice oohs",
    60: "french horn",
    68: "oboe",
    70: "bassoon",
    71: "clarinet",
    73: "flute",
}


class RendererUnavailableError(DataError, RuntimeError):
    """FluidSynth or its soundfont is missing; the message names the Debian package to install."""


@dataclass(frozen=True)
class Note:
    """One sounding note: onset and offset in seconds, MIDI pitch 0–127, MIDI velocity 1–127."""

    onset: float
    offset: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class InstrumentTrack:
    """Notes played on one General MIDI program (0–127, bank 0)."""

    program: int
    notes: Sequence[Note]


def _load_fluidsynth():
    """Import pyfluidsynth, turning its two failure modes into one-line errors."""
    try:
        import fluidsynth
    except ModuleNotFoundError as err:
        raise RendererUnavailableError(
            "pyfluidsynth is not installed: pip install 'discodiff[render]'"
        ) from err
    except ImportError as err:
        raise RendererUnavailableError(
            "libfluidsynth not found: install the Debian package fluidsynth (apt-get install fluidsynth)"
        ) from err
    return fluidsynth


class FluidSynthRenderer:
    """Renders :class:`InstrumentTrack` lists to mono float32 audio with one soundfont.

    Args:
        soundfont: a General MIDI ``.sf2`` file.
        sample_rate: output rate in Hz.
        gain: FluidSynth master gain (0.8 puts a four-part chorale near -21 dBFS RMS, above the SingSong -25 dBFS filter).

    Raises:
        RendererUnavailableError: pyfluidsynth, libfluidsynth or the soundfont is missing.
    """

    def __init__(self, soundfont: str | Path = DEFAULT_SOUNDFONT, sample_rate: int = SAMPLE_RATE, gain: float = 0.8):
        self.soundfont = Path(soundfont)
        self.sample_rate = sample_rate
        self.gain = gain
        if not self.soundfont.is_file():
            raise RendererUnavailableError(
                f"soundfont {self.soundfont} not found: install the Debian package fluid-soundfont-gm "
                "(apt-get install fluid-soundfont-gm) or pass another .sf2 file"
            )
        self._fluidsynth = _load_fluidsynth()
        self._write_float = ctypes.CDLL(self._fluidsynth.lib).fluid_synth_write_float
        self._write_float.restype = ctypes.c_int
        self._write_float.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int] * 2

    def _new_synth(self):
        synth = self._fluidsynth.Synth(
            gain=self.gain,
            samplerate=float(self.sample_rate),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 1},
        )
        soundfont_id = synth.sfload(str(self.soundfont))
        if soundfont_id < 0:
            synth.delete()
            raise RendererUnavailableError(
                f"FluidSynth cannot load {self.soundfont}; reinstall the Debian package fluid-soundfont-gm "
                "or pass a valid .sf2 file"
            )
        return synth, soundfont_id

    def render(self, tracks: Sequence[InstrumentTrack], num_samples: int) -> np.ndarray:
        """Render ``tracks`` together to exactly ``num_samples`` mono float32 samples ``[T]``.

        Each track gets its own MIDI channel, skipping the drum channel; notes past the end are cut.
        """
        if len(tracks) > MAX_PITCHED_TRACKS:
            raise ValueError(f"{len(tracks)} tracks, at most {MAX_PITCHED_TRACKS} pitched MIDI channels exist")
        synth, soundfont_id = self._new_synth()
        try:
            events = []
            for index, track in enumerate(tracks):
                channel = index if index < DRUM_CHANNEL else index + 1
                synth.program_select(channel, soundfont_id, 0, track.program)
                for note in track.notes:
                    events.append((round(note.onset * self.sample_rate), 1, channel, note.pitch, note.velocity))
                    events.append((round(note.offset * self.sample_rate), 0, channel, note.pitch, 0))
            events.sort(key=lambda event: event[:2])  # note-offs before note-ons at the same sample
            stereo = np.zeros((num_samples, 2), dtype=np.float32)
            position = 0
            for sample, is_note_on, channel, pitch, velocity in events:
                if sample >= num_samples:
                    break
                position = self._synthesize(synth, stereo, position, sample)
                if is_note_on:
                    synth.noteon(channel, pitch, velocity)
                else:
                    synth.noteoff(channel, pitch)
            self._synthesize(synth, stereo, position, num_samples)
        finally:
            synth.delete()
        return stereo.mean(axis=1)

    def _synthesize(self, synth, stereo: np.ndarray, start: int, stop: int) -> int:
        """Fill ``stereo[start:stop]`` (interleaved float32 frames) and return ``stop``."""
        if stop > start:
            pointer = stereo[start:].ctypes.data
            self._write_float(synth.synth, stop - start, pointer, 0, 2, pointer, 1, 2)
        return max(start, stop)
