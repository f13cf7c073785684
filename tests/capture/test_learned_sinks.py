"""gpt-oss's learned attention sinks (``s_aux``) end to end: ``spectra.profile`` on a tiny random
gpt-oss against float64 metrics from its own eager attention weights, where the sink's mass is
``1 − Σ_j p_j`` (docs/metrics.md, "Learned attention sinks"); the Probe leaves the logits bitwise
equal; the report viewer's weights are eager's."""

import numpy as np
import pytest
import torch

import spectra
from spectra.models import conformance
from spectra.report.viewer import attention_data, attention_weights

THRESHOLD = 0.9
N_SINK = 4


@pytest.fixture(scope="module")
def gpt_oss():
    model = conformance.tiny_model_of("gpt_oss")
    # Sinks large enough to hold real mass (the random init gives them std 0.02).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "sinks", None), torch.nn.Parameter):
                module.sinks.copy_(torch.linspace(-2.0, 3.0, module.sinks.numel()))
    return model


def eager_metrics(model, inputs):
    """float64 metrics of every (batch row, layer, head, position) from eager's weights and p_sink."""
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    out = []
    for attn in attentions:
        p = attn.double()  # (B, H, T, T): the keys' weights, the sink's mass left out
        p_sink = (1.0 - p.sum(-1)).clamp_min(0.0)
        plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
        entropy = -plogp.sum(-1) - torch.where(p_sink > 0, p_sink * p_sink.clamp_min(1e-300).log(), 0.0)
        outcomes = torch.cat([p, p_sink.unsqueeze(-1)], -1).sort(-1, descending=True).values.cumsum(-1)
        out.append(
            {
                "entropy": entropy,
                "max_attn": p.amax(-1),
                "p_sink": p_sink,
                "cumulative": outcomes,
                "weights": p,
            }
        )
    return out


def test_profile_counts_the_sink_as_eager_does(gpt_oss):
    inputs = conformance._inputs(gpt_oss)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    truth = eager_metrics(gpt_oss, inputs)
    assert float(max(t["p_sink"].max() for t in truth)) > 0.3, "the sinks hold real mass in this test"
    frame = spectra.profile(
        gpt_oss,
        ids,
        mask,
        metrics=["entropy", "entropy_normalized", "max_attn", "k_eff", "sink_mass", "sink_mass_n", "n_visible"],
        ignore_first=0,
        threshold=THRESHOLD,
        n_sink=N_SINK,
    )
    real = [torch.nonzero(mask[b]).flatten() for b in range(mask.shape[0])]
    first_real = [int(r[0]) for r in real]
    for row in frame.itertuples():
        t = truth[row.layer]
        b, h, pos = row.sample, row.head, int(real[row.sample][row.token])
        p, p_sink = t["weights"][b, h, pos], float(t["p_sink"][b, h, pos])
        start = first_real[b]
        assert row.entropy == pytest.approx(float(t["entropy"][b, h, pos]), abs=1e-5)
        assert row.max_attn == pytest.approx(float(t["max_attn"][b, h, pos]), abs=1e-6)
        assert row.sink_mass == pytest.approx(float(p[start]) + p_sink, abs=1e-6)
        assert row.sink_mass_n == pytest.approx(float(p[start : start + N_SINK].sum()) + p_sink, abs=1e-6)
        n_visible = int(row.n_visible)
        assert row.entropy_normalized == pytest.approx(row.entropy / np.log(n_visible + 1), abs=1e-6)
        cumulative = t["cumulative"][b, h, pos]
        k = int(row.k_eff)
        assert 1 <= k <= n_visible + 1
        assert float(cumulative[k - 1]) >= THRESHOLD - 1e-5
        assert k == 1 or float(cumulative[k - 2]) < THRESHOLD + 1e-5


def test_probe_keeps_logits_bitwise_and_viewer_weights_are_eager(gpt_oss):
    inputs = conformance._inputs(gpt_oss)
    with torch.no_grad():
        base = gpt_oss(**inputs).logits
        with spectra.Probe(gpt_oss, capture=("q", "k"), row_stats=True) as probe:
            probed = gpt_oss(**inputs).logits
            rows = probe.drain_row_stats()
    assert torch.equal(base, probed)
    assert np.isfinite(rows["entropy"]).all()
    ids = inputs["input_ids"][1:]  # the unpadded row
    view = attention_data(gpt_oss, None, ids)
    truth = eager_metrics(gpt_oss, {"input_ids": ids})
    head = view["n_heads"] - 1  # the largest sink logit (3.0)
    for layer in range(len(truth)):
        assert view["layers"][layer]["sinks"] is not None
        p_sink = truth[layer]["p_sink"][0, head]
        held = int(p_sink.argmax())  # the query whose sink holds the most
        assert float(p_sink[held]) > 0.05
        for query in (0, 5, held, ids.shape[1] - 1):
            got = attention_weights(view, layer, head, 0, query)
            want = truth[layer]["weights"][0, head, query].numpy()
            np.testing.assert_allclose(got, want, atol=2e-6)
            assert got.sum() == pytest.approx(1.0 - float(p_sink[query]), abs=1e-6)  # the sink keeps its share
