"""A tiny stereo MusicGen built in memory (the stereo decode tests compare it with transformers' generate())."""
from __future__ import annotations

import torch


def stereo_model():
    """A tiny stereo MusicGen (8 codebooks, left/right interleaved) built in memory, as in test_decode.py."""
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    from studio.runtime.tiny import _tokenizer

    text = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                    decoder_start_token_id=0, pad_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=32, num_filters=4, num_residual_layers=1,
                          upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=32,
                          target_bandwidths=[2.2], num_lstm_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    ffn_dim=64, num_codebooks=8, pad_token_id=2048, bos_token_id=2048,
                                    audio_channels=2)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(config).eval()
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf))
    model.generation_config.decoder_start_token_id = model.generation_config.pad_token_id = 2048
    processor = MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
                                  tokenizer=_tokenizer())
    return model, processor
