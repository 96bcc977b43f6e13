"""COCO box / mask AP (`metrics.detection.box_map`, `mask_map`) and panoptic quality (`panoptic_quality`) against
hand computations, perfect predictions on the pasted-objects set, and mIoU on its semantic maps."""

from __future__ import annotations

import pytest
import torch

from dinov3_hf.data import make_pasted_objects
from dinov3_hf.data.pasted_objects import CATEGORIES
from dinov3_hf.metrics import box_map, mask_map, mean_iou, panoptic_quality


@pytest.fixture(scope="module")
def records():
    return make_pasted_objects(6, image_size=96, seed=5)


def _perfect(record) -> dict[str, torch.Tensor]:
    return {**record.target(), "scores": torch.linspace(0.9, 0.5, len(record.labels))}


def test_perfect_predictions_score_one(records):
    targets = [r.target() for r in records]
    predictions = [_perfect(r) for r in records]
    assert box_map(predictions, targets) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}
    assert mask_map(predictions, targets) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}
    panoptic = [r.panoptic() for r in records]
    things = range(len(CATEGORIES))
    assert panoptic_quality(panoptic, panoptic, things) == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    background = len(CATEGORIES)
    assert panoptic_quality(panoptic, panoptic, things, [background], unlabelled=background)["pq"] == 1.0


def test_baseline_with_shifted_boxes_and_swapped_labels_scores_lower(records):
    targets = [r.target() for r in records]
    shifted = [{**_perfect(r), "boxes": r.boxes + torch.tensor([6.0, 0.0, 6.0, 0.0])} for r in records]
    swapped = [{**_perfect(r), "labels": (r.labels + 1) % len(CATEGORIES)} for r in records]
    assert box_map(shifted, targets)["map"] < 0.9
    assert box_map(swapped, targets) == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}


def _one(boxes, scores, labels):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return {"boxes": boxes, "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def test_box_at_iou_062_counts_at_the_three_lowest_thresholds():
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}
    # IoU = 62 / 100: a hit at thresholds 0.50, 0.55, 0.60 (AP 1), a miss at 0.65 .. 0.95 (AP 0)
    result = box_map([_one([[0.0, 0.0, 6.2, 10.0]], [0.9], [0])], [target])
    assert result["map_50"] == 1.0 and result["map_75"] == 0.0
    assert result["map"] == pytest.approx(3 / 10, abs=1e-6)


def test_false_positive_ranked_first_halves_precision():
    # two objects; the highest score is a false positive, the second a hit on object 1, object 2 is missed:
    # precision 1/2 at recall 1/2, so COCO's 101-point AP = 51 recall points (0, 0.01, .., 0.50) x 0.5 / 101
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 1])}
    prediction = _one([[20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]], [0.9, 0.8], [1, 1])
    assert box_map([prediction], [target])["map_50"] == pytest.approx(51 * 0.5 / 101, abs=1e-6)
    # with the scores swapped the hit comes first: precision 1 up to recall 1/2
    swapped = {**prediction, "scores": torch.tensor([0.8, 0.9])}
    assert box_map([swapped], [target])["map_50"] == pytest.approx(51 / 101, abs=1e-6)


def test_mask_ap_uses_mask_iou():
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, :10, :10] = True
    partial = torch.zeros_like(mask)
    partial[0, :10, :7] = True  # mask IoU 0.7: a hit at 0.50 .. 0.70, a miss at 0.75
    prediction = {"masks": partial, "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}
    result = mask_map([prediction], [{"masks": mask, "labels": torch.tensor([2])}])
    assert result["map_50"] == 1.0 and result["map_75"] == 0.0
    assert result["map"] == pytest.approx(5 / 10, abs=1e-6)


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match="'scores'"):
        target = {"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}
        box_map([target], [target])
    with pytest.raises(ValueError, match="one per image"):
        mask_map([], [{"masks": torch.zeros(1, 2, 2, dtype=torch.bool), "labels": torch.zeros(1)}])
    small = {"masks": torch.ones(1, 2, 2, dtype=torch.bool), "labels": torch.zeros(1), "scores": torch.ones(1)}
    with pytest.raises(ValueError, match="target_sizes"):
        mask_map([small], [{"masks": torch.ones(1, 4, 4, dtype=torch.bool), "labels": torch.zeros(1)}])


def _panoptic(segmentation, labels):
    return {"segmentation": segmentation, "segments_info": [{"id": i + 1, "label_id": l} for i, l in enumerate(labels)]}


def _two_segments():
    target = torch.zeros(10, 10, dtype=torch.int32)
    target[:5, :5], target[5:, 5:] = 1, 2  # A (25 px, label 0), B (25 px, label 1)
    prediction = torch.zeros(10, 10, dtype=torch.int32)
    prediction[:5, :4], prediction[5:, 5:8] = 1, 2  # A' = 20 px of A (IoU 0.8), B' = 15 px of B (IoU 0.6)
    return prediction, target


def test_panoptic_quality_of_two_segments_by_hand():
    prediction, target = _two_segments()
    result = panoptic_quality([_panoptic(prediction, [0, 1])], [_panoptic(target, [0, 1])], things=[0, 1])
    # both matched: per class PQ = IoU / 1, SQ = IoU, RQ = 1; averaged over the two classes
    assert result == pytest.approx({"pq": 0.7, "sq": 0.7, "rq": 1.0})
    # B' labelled 0: class 0 has TP A (IoU 0.8) and FP B' -> PQ 0.8 / 1.5, RQ 1 / 1.5; class 1 has FN B -> 0
    wrong = panoptic_quality([_panoptic(prediction, [0, 0])], [_panoptic(target, [0, 1])], things=[0, 1])
    assert wrong == pytest.approx({"pq": (0.8 / 1.5) / 2, "sq": 0.8 / 2, "rq": (1 / 1.5) / 2})
    # a category with no segment anywhere is left out of the average
    assert panoptic_quality([_panoptic(prediction, [0, 1])], [_panoptic(target, [0, 1])], things=[0, 1, 2])["pq"] == (
        pytest.approx(0.7)
    )
    # B' shrunk to 12 px: IoU 0.48 is no match, so class 1 has an FP and an FN -> PQ 0
    prediction[5:, 5:8] = 0
    prediction[5:9, 5:8] = 2
    shrunk = panoptic_quality([_panoptic(prediction, [0, 1])], [_panoptic(target, [0, 1])], things=[0, 1])
    assert shrunk == pytest.approx({"pq": 0.8 / 2, "sq": 0.8 / 2, "rq": 1 / 2})


def test_panoptic_background_void_or_stuff():
    target = torch.zeros(10, 10, dtype=torch.int32)
    target[:5, :5] = 1  # one object of 25 px; 75 px of background
    prediction = target.clone()
    prediction[5, :5] = 1  # the object grown by 5 background pixels
    prediction[8:, :5] = 2  # a spurious 10-px object on the background
    args = ([_panoptic(prediction, [0, 0])], [_panoptic(target, [0])])
    # background void: void pixels leave the union (IoU 25 / 25) and the spurious segment is no false positive
    assert panoptic_quality(*args, things=[0]) == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0})
    # background a stuff class: object IoU 25 / 30 with the spurious FP -> (25 / 30) / 1.5; background IoU 60 / 75
    expected = ((25 / 30) / 1.5 + 60 / 75) / 2
    assert panoptic_quality(*args, things=[0], stuffs=[1], unlabelled=1)["pq"] == pytest.approx(expected)
    # background segments listed explicitly are merged with the unlabelled pixels into one stuff segment
    prediction[6, :], prediction[7, :] = 3, 4
    listed = {"segmentation": prediction, "segments_info": [*args[0][0]["segments_info"],
              {"id": 3, "label_id": 1}, {"id": 4, "label_id": 1}]}
    assert panoptic_quality([listed], args[1], things=[0], stuffs=[1], unlabelled=1)["pq"] == pytest.approx(expected)


def test_panoptic_matches_torchmetrics_when_every_pixel_is_labelled(records):
    # torchmetrics' PanopticQuality differs from panopticapi only on unlabelled predicted pixels; here there are none
    from torchmetrics.detection import PanopticQuality

    background = len(CATEGORIES)
    generator = torch.Generator().manual_seed(0)
    metric = PanopticQuality(things=set(range(background)), stuffs={background}, return_sq_and_rq=True)
    predictions, targets = [], []
    for record in records:
        target = record.panoptic()
        segmentation = target["segmentation"].clone()
        # a worse prediction: drop, relabel and erode some objects
        info = []
        for segment in target["segments_info"]:
            choice = int(torch.randint(3, (1,), generator=generator))
            mask = segmentation == segment["id"]
            if choice == 0:
                segmentation[mask] = 0
                continue
            label = segment["label_id"] if choice == 1 else (segment["label_id"] + 1) % background
            segmentation[mask & (torch.rand(mask.shape, generator=generator) < 0.3)] = 0
            info.append({"id": segment["id"], "label_id": label})
        predictions.append({"segmentation": segmentation, "segments_info": info})
        targets.append(target)

        def pairs(item):
            out = torch.full((*item["segmentation"].shape, 2), 0, dtype=torch.long)
            out[..., 0] = background
            for segment in item["segments_info"]:
                out[item["segmentation"] == segment["id"]] = torch.tensor([segment["label_id"], segment["id"]])
            return out[None]

        metric.update(pairs(predictions[-1]), pairs(target))
    expected = dict(zip(("pq", "sq", "rq"), metric.compute().tolist()))
    result = panoptic_quality(predictions, targets, range(background), [background], unlabelled=background)
    assert result == pytest.approx(expected, abs=1e-6)
    assert 0.2 < result["pq"] < 0.9


def test_mean_iou_on_semantic_maps(records):
    semantic = [r.semantic for r in records]
    assert mean_iou(semantic, semantic, num_labels=len(CATEGORIES) + 1)["mean_iou"] == 1.0
    # predicting background everywhere: background IoU = its pixel fraction, every object class 0
    background = [torch.zeros_like(s) for s in semantic]
    result = mean_iou(background, semantic, num_labels=len(CATEGORIES) + 1)
    fraction = float(sum((s == 0).sum() for s in semantic)) / sum(s.numel() for s in semantic)
    present = len(set(torch.cat([s.reshape(-1) for s in semantic]).tolist()))
    assert result["mean_iou"] == pytest.approx(fraction / present)


def test_empty_panoptic_prediction_as_transformers_writes_it():
    target = torch.zeros(10, 10, dtype=torch.int32)
    target[:5, :5] = 1
    empty = {"segmentation": torch.zeros(10, 10) - 1, "segments_info": []}  # no segment: a float map of -1
    assert panoptic_quality([empty], [_panoptic(target, [0])], things=[0])["pq"] == 0.0  # one FN
    # with the background as stuff: object class FN (PQ 0), background IoU 75 / 100
    result = panoptic_quality([empty], [_panoptic(target, [0])], things=[0], stuffs=[1], unlabelled=1)
    assert result == pytest.approx({"pq": 0.75 / 2, "sq": 0.75 / 2, "rq": 0.5})


def test_no_detections_score_zero_and_no_ground_truth_is_nan(records):
    targets = [r.target() for r in records]
    empty = [{"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 96, 96, dtype=torch.bool), "scores": torch.zeros(0),
              "labels": torch.zeros(0, dtype=torch.long)} for _ in records]
    assert box_map(empty, targets) == mask_map(empty, targets) == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    assert all(v != v for v in box_map(empty, empty).values())  # NaN: nothing to find
