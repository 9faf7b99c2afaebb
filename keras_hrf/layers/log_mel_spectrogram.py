"""`LogMelSpectrogram`: waveform -> log-Mel frames, on Keras' `MelSpectrogram`."""

import keras
from keras import ops


def _next_power_of_two(n):
    return 1 << (int(n) - 1).bit_length()


@keras.saving.register_keras_serializable(package="keras_hrf")
class LogMelSpectrogram(keras.layers.Layer):
    """`(batch, samples)` waveforms -> `(batch, frames, num_mel_bins)` log-Mel
    power in dB, the layout the models take; put it in front of a model to
    ship one artifact that takes audio.

    Built on `keras.layers.MelSpectrogram` (Hann window, centred frames:
    `1 + samples // hop` frames). A mask on the samples (padding) becomes a
    mask on the frames whose centre lies inside the audio.

    Args:
        sample_rate: Sampling rate of the input in Hz.
        num_mel_bins: Mel bands (80 by default).
        frame_length_ms: Window length (25 ms).
        frame_step_ms: Hop (10 ms).
        fft_length: FFT size; default: the next power of two >= the window.
        min_freq, max_freq: Mel filterbank range in Hz (`max_freq=None`:
            half the sampling rate).
        min_power: Floor of the power before the log (dB of silence).
    """

    def __init__(
        self,
        sample_rate=16000,
        num_mel_bins=80,
        frame_length_ms=25.0,
        frame_step_ms=10.0,
        fft_length=None,
        min_freq=20.0,
        max_freq=None,
        min_power=1e-10,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.frame_length_ms = frame_length_ms
        self.frame_step_ms = frame_step_ms
        self.fft_length = fft_length
        self.min_freq = min_freq
        self.max_freq = max_freq
        self.min_power = min_power
        self.frame_length = int(round(sample_rate * frame_length_ms / 1000.0))
        self.frame_step = int(round(sample_rate * frame_step_ms / 1000.0))
        self.mel = keras.layers.MelSpectrogram(
            fft_length=fft_length or _next_power_of_two(self.frame_length),
            sequence_stride=self.frame_step,
            sequence_length=self.frame_length,
            window="hann",
            sampling_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            min_freq=min_freq,
            max_freq=max_freq if max_freq is not None else sample_rate / 2.0,
            # Keras' own dB conversion clips at the batch maximum minus top_db,
            # which would make an utterance's features depend on its batch.
            power_to_db=False,
            mag_exp=2.0,
            dtype=self.dtype_policy,
            name="mel_spectrogram",
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.mel.build(input_shape)

    def call(self, waveforms):
        power = ops.maximum(self.mel(waveforms), self.min_power)
        decibels = 10.0 * ops.log(power) / ops.log(10.0)
        return ops.transpose(decibels, (0, 2, 1))

    def compute_mask(self, waveforms, mask=None):
        if mask is None:
            return None
        return mask[:, :: self.frame_step]

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else 1 + samples // self.frame_step
        return (input_shape[0], frames, self.num_mel_bins)

    def get_config(self):
        return {
            **super().get_config(),
            "sample_rate": self.sample_rate,
            "num_mel_bins": self.num_mel_bins,
            "frame_length_ms": self.frame_length_ms,
            "frame_step_ms": self.frame_step_ms,
            "fft_length": self.fft_length,
            "min_freq": self.min_freq,
            "max_freq": self.max_freq,
            "min_power": self.min_power,
        }
