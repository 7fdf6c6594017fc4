"""Music corpora -> codec tokens -> training batches.

    synth.py         the synthetic MusicCaps-style corpus (`magnet-jax synth-corpus`)
    manifests.py     MusicCaps CSV, audiocraft JSONL + sidecar .json, folder + .txt captions
    audio.py         decode (wav/flac/ogg/mp3), check, downmix, resample, cut segments
    loudness.py      ITU-R BS.1770-4 loudness and audiocraft's normalisation
    rejects.py       why an input was skipped, and the report that says so
    encoder.py       the codec the tokenizer is parameterised by (EnCodec, jitted and sharded)
    records.py       the record schema (TFDS features) and ArrayRecord shards
    tokenize.py      the resumable, multi-process tokenization job (`magnet-jax tokenize`)
    tfds_builder.py  the `magnet_tokens` TFDS builder over the same records
    loader.py        the grain training loader (`make_train_loader`)
    cli.py           the two verbs
"""
