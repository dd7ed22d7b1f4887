"""preprocess.detector runs facenet-pytorch's MTCNN faster: the same detections as facenet-pytorch's own code."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PY, run

pytest.importorskip("facenet_pytorch", reason="pip install --no-deps facenet-pytorch==2.6.0 (done by .ci/run)")

from preprocess.cpu_layers import prelu_pool  # noqa: E402
from preprocess.detector import Detector  # noqa: E402
from preprocess.resample import area_crops, area_resize, integral_image  # noqa: E402


def photo(name):
    import skimage
    return cv2.cvtColor(cv2.imread(str(Path(skimage.__file__).parent / "data" / name)), cv2.COLOR_BGR2RGB)


def test_area_crops_are_bit_identical_to_interpolate_area():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    ii = integral_image(frames)
    n = 200
    y0, x0 = rng.integers(0, 80, n), rng.integers(0, 110, n)
    h = np.minimum(rng.integers(1, 90, n), 90 - y0)   # from 1 px (upsampled) to most of the frame
    w = np.minimum(rng.integers(1, 120, n), 120 - x0)
    image = rng.integers(0, 2, n)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    for size in (24, 48):
        ours = area_crops(ii, image, y0, x0, h, w, size)
        assert ours.shape == (n, size, size, 3) and ours.dtype == np.float32
        normalised = area_crops(ii, image, y0, x0, h, w, size, 127.5, 0.0078125)
        for k in range(n):
            ref = F.interpolate(tensor[image[k]:image[k] + 1, :, y0[k]:y0[k] + h[k], x0[k]:x0[k] + w[k]],
                                size=(size, size), mode="area")[0].permute(1, 2, 0)
            assert np.array_equal(ours[k], ref.numpy()), (size, k, h[k], w[k])
            # MTCNN's normalisation folded in: the same float32 operations as facenet-pytorch's on the crop
            assert np.array_equal(normalised[k], ((ref - 127.5) * 0.0078125).numpy()), (size, k)


def test_pyramid_levels_are_bit_identical_to_interpolate_area():
    """MTCNN's pyramid levels (and other sizes, up and down, odd and even) cut from the integral images, each
    frame of a batch as on its own; with the normalisation folded in, as facenet-pytorch normalises a level."""
    frames = np.random.default_rng(1).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    ii = integral_image(frames)                                                      # [3, 91, 161, 3]
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    for size in [(55, 97), (39, 69), (28, 49), (12, 21), (2, 3), (90, 160), (91, 200), (7, 100)]:
        ours, normalised = area_resize(ii, size), area_resize(ii, size, 127.5, 0.0078125)
        assert ours.shape == (3, *size, 3) and ours.dtype == np.float32
        ref = F.interpolate(tensor, size=size, mode="area")
        assert np.array_equal(ours, ref.permute(0, 2, 3, 1).numpy()), size
        assert np.array_equal(normalised, ((ref - 127.5) * 0.0078125).permute(0, 2, 3, 1).numpy()), size
        assert np.array_equal(area_resize(ii[1:2], size)[0], ours[1])


def test_integral_image_is_exact_for_large_frames():
    frame = np.full((1, 3000, 3000, 1), 255, np.uint8)              # 255 * 9e6 > 2**31: float64 sums
    ii = integral_image(frame)
    assert ii.dtype == np.float64 and ii[0, -1, -1, 0] == 255 * 3000 * 3000
    # the kernels read float64 integral images too (a second compiled form): the mean of a bin of 255s is 255
    assert (area_resize(ii, (30, 40)) == 255).all()
    assert (area_crops(ii, *np.array([[0], [100], [2000], [900], [700]]), 24) == 255).all()
    small = np.random.default_rng(2).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    ii = integral_image(small)
    assert ii.dtype == np.int32 and ii.shape == (2, 6, 8, 3)                       # channels last
    assert np.array_equal(ii[:, 1:, 1:], small.astype(np.int64).cumsum(1).cumsum(2))
    assert not ii[:, 0].any() and not ii[:, :, 0].any()


def test_freed_memory_is_reused_without_page_faults():
    """keep_freed_memory: blocks of a few MB freed and allocated again come back without the kernel faulting in
    fresh pages (glibc; elsewhere it says it changed nothing). In a process of its own: the setting is process-wide."""
    code = """
import resource
import numpy as np
from preprocess.detector import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        blocks = [np.ones(3 << 20, np.uint8) for _ in range(6)]    # 6 blocks of 3 MB, written
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(faults(), keep_freed_memory(), faults(), faults())
"""
    res = run([PY, "-c", code])
    assert res.returncode == 0, res.stderr
    before, changed, after, again = res.stdout.split()
    if changed == "False":
        pytest.skip("the C library has no mallopt (not glibc)")
    # 768 pages a block; after the setting only the heap's first growth to 18 MB faults (4,608 pages), then none
    assert int(before) > 20 * 6 * 700 and int(after) < 6000 and int(again) < 200, res.stdout


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("shape", [(1, 16, 215, 383), (1, 16, 216, 384), (2, 10, 215, 384), (128, 32, 22, 22),
                                   (32, 64, 21, 21), (2, 3, 5, 4), (1, 2, 3, 3), (3, 8, 4, 7)])
def test_prelu_then_pooling_in_one_pass_is_prelu_then_max_pool2d(shape, k):
    """prelu_pool equals F.prelu then max_pool2d(k, 2, ceil_mode=True) bit for bit: even and odd sizes (a last
    window cut short), windows that fit once, slopes of both signs, and the first C of C' channels."""
    torch.manual_seed(sum(shape) + k)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    slope = torch.randn(shape[1])
    if shape[2] < k or shape[3] < k:
        with pytest.raises(ValueError, match="smaller than"):
            prelu_pool(x, slope, k)
        return
    out = prelu_pool(x, slope, k)
    assert torch.equal(out, F.max_pool2d(F.prelu(x, slope), k, 2, ceil_mode=True))
    assert out.is_contiguous(memory_format=torch.channels_last)
    first = prelu_pool(x, slope[:shape[1] // 2 + 1], k)                    # the first channels only
    assert torch.equal(first, F.max_pool2d(F.prelu(x[:, :shape[1] // 2 + 1], slope[:shape[1] // 2 + 1]), k, 2,
                                           ceil_mode=True))


def test_cpu_pnet_is_facenet_pytorchs_pnet():
    """CpuNets.pnet (first convolution padded to 16 channels, PReLU and pooling in one pass, heads as one
    matrix product, the logistic for the softmax) gives facenet-pytorch's PNet outputs."""
    from facenet_pytorch import MTCNN
    mtcnn = MTCNN(keep_all=True)
    assert (mtcnn.pnet.prelu1.weight < 0).any() and (mtcnn.pnet.prelu1.weight > 0).any()
    ours = Detector(mtcnn)
    for shape in [(2, 3, 217, 385), (3, 3, 12, 13), (1, 3, 29, 40)]:
        x = ((torch.rand(shape) * 255).round() - 127.5) * 0.0078125
        with torch.no_grad():
            reg, probs = mtcnn.pnet(x)
            our_reg, our_probs = ours.nets.pnet(x.contiguous(memory_format=torch.channels_last))
        assert our_reg.shape == reg.shape and our_probs.shape == probs[:, 1].shape
        assert (our_reg - reg).abs().max() < 1e-4 and (our_probs - probs[:, 1]).abs().max() < 1e-4


def test_cpu_rnet_and_onet_are_facenet_pytorchs_bit_for_bit():
    from facenet_pytorch import MTCNN
    mtcnn = MTCNN(keep_all=True)
    ours = Detector(mtcnn)
    torch.manual_seed(5)
    for net, mine, size in [(mtcnn.rnet, ours.nets.rnet, 24), (mtcnn.onet, ours.nets.onet, 48)]:
        x = ((torch.rand(37, 3, size, size) * 255).round() - 127.5) * 0.0078125
        with torch.no_grad():
            ref, got = net(x.contiguous(memory_format=torch.channels_last)), mine(
                x.contiguous(memory_format=torch.channels_last))
        for a, b in zip(ref, got):
            assert torch.equal(a, b), (size, (a - b).abs().max())


def scenes():
    """Frames with one face, two faces of different sizes, a tilted face, a small face, and none."""
    face = photo("astronaut.png")                                         # 512 x 512
    one = cv2.resize(face, (320, 240))
    two = np.full((240, 400, 3), 90, np.uint8)
    two[10:230, 0:220] = cv2.resize(face, (220, 220))
    two[100:200, 260:360] = cv2.resize(face, (100, 100))
    tilted = cv2.warpAffine(one, cv2.getRotationMatrix2D((160, 120), 25, 1.0), (320, 240))
    small = np.full((240, 320, 3), 30, np.uint8)
    small[60:180, 160:280] = cv2.resize(face, (120, 120))
    camera = cv2.resize(photo("camera.png"), (320, 240))                  # a man with a camera (imread: 3 channels)
    none = cv2.resize(photo("coffee.png"), (320, 240))
    return {"one": one, "two": two, "tilted": tilted, "small": small, "camera": camera, "none": none}


def assert_same(ref, ours):
    (rb, rp, rl), (ob, op, ol) = ref, ours
    if rb is None:
        assert ob is None and ol is None
        return
    assert ob.shape == rb.shape
    assert np.abs(ob - rb).max() < 1e-2 and np.abs(ol - rl).max() < 1e-2           # pixels
    assert np.abs(np.asarray(op, float) - np.asarray(rp, float)).max() < 1e-5


@pytest.mark.parametrize("min_face", [20, 60])
def test_the_same_faces_as_facenet_pytorch_one_frame_at_a_time_and_batched(min_face):
    from facenet_pytorch import MTCNN
    torch.manual_seed(0)
    mtcnn = MTCNN(keep_all=True, thresholds=[0.6, 0.7, 0.9], min_face_size=min_face)
    ours = Detector(mtcnn)
    found = {}
    for name, frame in scenes().items():
        ref = mtcnn.detect(frame, landmarks=True)
        assert_same(ref, ours.detect(frame, landmarks=True))
        found[name] = 0 if ref[0] is None else len(ref[0])
        boxes, _ = ours.detect(frame)                                      # without landmarks: two values
        assert (boxes is None) == (ref[0] is None)
    # (the astronaut's face is a sixth of the photo's width: 16 to 55 px here)
    assert found["one"] == found["tilted"] == 1 and found["none"] == 0
    assert found["two"] == found["small"] + 1 == (2 if min_face == 20 else 1)  # 16 and 25 px: under 60
    # A batch of equal-sized frames, as extract_faces sends them; PNet on one frame of a pyramid level at a
    # time, on groups of two or three (the last group short), on all five at once.
    batch = [scenes()[k] for k in ("one", "tilted", "small", "none", "camera")]
    ref = mtcnn.detect(batch, landmarks=True)
    for group_pixels in (1, 2 * 145 * 193, 3 * 145 * 193, 10**9):      # the largest level of 320 x 240: 145 x 193
        ours.GROUP_PIXELS = group_pixels
        got = ours.detect(batch, landmarks=True)
        for k in range(len(batch)):
            assert_same((ref[0][k], ref[1][k], ref[2][k]), (got[0][k], got[1][k], got[2][k]))


def test_other_inputs_go_to_facenet_pytorch():
    from facenet_pytorch import MTCNN
    from PIL import Image
    mtcnn = MTCNN(keep_all=True)
    frame = scenes()["one"]
    boxes, _ = Detector(mtcnn).detect(Image.fromarray(frame))
    ref, _ = mtcnn.detect(Image.fromarray(frame))
    assert np.array_equal(boxes, ref)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_on_device_the_same_faces_as_facenet_pytorch(device):
    """The GPU's form (pyramid levels and candidates cut by torch on the device, facenet-pytorch's networks as
    they are), here also run on a CPU: facenet-pytorch's detections on the same device."""
    from facenet_pytorch import MTCNN
    mtcnn = MTCNN(keep_all=True, thresholds=[0.6, 0.7, 0.9], device=device)
    ours = Detector(mtcnn, on_device=True)
    assert ours.on_device and Detector(mtcnn).on_device == (device == "cuda")
    found = 0
    for frame in scenes().values():
        ref = mtcnn.detect(frame, landmarks=True)
        assert_same(ref, ours.detect(frame, landmarks=True))
        found += 0 if ref[0] is None else len(ref[0])
    assert found >= 5
    batch = [scenes()[k] for k in ("one", "tilted", "small", "none", "camera")]
    ref, got = mtcnn.detect(batch, landmarks=True), ours.detect(batch, landmarks=True)
    for k in range(len(batch)):
        assert_same((ref[0][k], ref[1][k], ref[2][k]), (got[0][k], got[1][k], got[2][k]))


def test_device_cuts_are_the_host_cuts():
    """integral_image_t / area_resize_t / area_crops_t (the GPU's) equal the host's functions bit for bit."""
    from preprocess.resample import area_crops_t, area_resize_t, integral_image_t
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    ii, iit = integral_image(frames), integral_image_t(torch.from_numpy(frames))     # channels last / first
    assert np.array_equal(iit.permute(0, 2, 3, 1).numpy(), ii)
    for size in [(55, 97), (12, 21), (2, 3), (90, 120), (91, 200)]:
        assert np.array_equal(area_resize_t(iit, size).permute(0, 2, 3, 1).numpy(), area_resize(ii, size)), size
    n = 100
    y0, x0 = rng.integers(0, 80, n), rng.integers(0, 110, n)
    h, w = np.minimum(rng.integers(1, 90, n), 90 - y0), np.minimum(rng.integers(1, 120, n), 120 - x0)
    image = rng.integers(0, 2, n)
    got = area_crops_t(iit, *(torch.from_numpy(v) for v in (image, y0, x0, h, w)), 24).numpy()
    assert np.array_equal(got, area_crops(ii, image, y0, x0, h, w, 24).transpose(0, 3, 1, 2))
