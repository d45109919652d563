from tiny import build_causal, build_seq2seq, build_tokenizer


def test_tiny_tokenizer_round_trips_code():
    tok = build_tokenizer()
    text = "re.sub('<[a-z]+>|\\|', '', s)  # ünïcode"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_tiny_models_build():
    tok = build_tokenizer()
    assert build_causal(tok).num_parameters() < 100_000
    assert build_seq2seq(tok).num_parameters() < 200_000
