/**
 * An offline stand-in for CIFAR-10: generated 32x32x3 images in 10 classes, so the example can
 * train without any download. It is labelled as synthetic wherever it is used.
 *
 * Each class is a shape (disk, square, triangle, plus, ring, horizontal bars, vertical bars,
 * X, checkerboard, diamond) drawn at a random position and size over a random two-colour
 * gradient background, plus a distractor blob and pixel noise. The shape's colour leans
 * towards a class hue but with wide jitter and a random brightness, so colour alone separates
 * classes only partly: a model first picks up the colour cue and then needs the convolutional
 * features for the shape, which is what makes accuracy climb over several rounds instead of
 * saturating at once.
 */
import { IMAGE_CHANNELS, IMAGE_HEIGHT, IMAGE_SIZE, IMAGE_WIDTH, NUM_CLASSES, type ImageDataset } from "./dataset";
import { SeededRandom, seededPermutation } from "./random";

// Local aliases: global lookups are ~10x slower inside vm contexts (as under jest), and the
// generator calls these once per pixel.
const { abs, floor, hypot, imul, max, min, trunc, cos, sin, PI } = Math;

export const SYNTHETIC_SOURCE = "synthetic (generated offline, CIFAR-10-shaped; not real CIFAR-10)";

export const SYNTHETIC_CLASSES: readonly string[] = [
  "disk",
  "square",
  "triangle",
  "plus",
  "ring",
  "horizontal-bars",
  "vertical-bars",
  "x-cross",
  "checkerboard",
  "diamond",
];

/** Tuning of the generator; fixed so that a seed means the same data everywhere. */
const HUE_JITTER = 0.07; // in turns of the colour wheel; classes are 0.1 apart
const NOISE_STDDEV = 0.08; // in [0, 1] pixel units
const MIN_SIZE = 6; // half-extent of the shape, pixels
const MAX_SIZE = 10;
const CENTER_JITTER = 6;

export interface SyntheticOptions {
  /**
   * Size of the whole dataset. Labels are balanced: class c has the images whose position in a
   * seeded permutation of 0..count-1 is congruent to c mod 10 (count/10 each, the first
   * count%10 classes one more).
   */
  count: number;
  /** Same seed, same images and labels. */
  seed: number;
  /**
   * Generate only these images of the dataset (in this order) instead of all `count`. Image i is
   * the same whichever subset it is generated in, so a node can build just its own partition.
   */
  indices?: readonly number[];
}

/** Generates a balanced, shuffled, deterministic CIFAR-shaped dataset (values in [-1, 1]). */
export function syntheticCifarLike(options: SyntheticOptions): ImageDataset {
  const { count, seed } = options;
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
  const order = seededPermutation(count, seed);
  const indices = options.indices ?? order.map((_, i) => i);
  const images = new Float32Array(indices.length * IMAGE_SIZE);
  const labels = new Int32Array(indices.length);
  const pixel = new Float32Array(IMAGE_SIZE);
  indices.forEach((index, position) => {
    if (!Number.isInteger(index) || index < 0 || index >= count)
      throw new RangeError(`image index ${index} is outside [0, ${count})`);
    const label = order[index]! % NUM_CLASSES;
    labels[position] = label;
    drawImage(label, new SeededRandom(imageSeed(seed, index)), pixel);
    const out = position * IMAGE_SIZE;
    for (let j = 0; j < IMAGE_SIZE; j++) {
      // Same normalisation as the CIFAR-10 loader: [0, 1] -> [-1, 1].
      images[out + j] = min(1, max(0, pixel[j]!)) * 2 - 1;
    }
  });
  return { images, labels, count: indices.length, source: SYNTHETIC_SOURCE };
}

/** An independent 32-bit seed for image `index` of the dataset seeded `seed`. */
function imageSeed(seed: number, index: number): number {
  let h = imul(trunc(seed) ^ 0x85ebca6b, 0x9e3779b1) ^ imul(index + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  h = imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

type Rgb = [number, number, number];

/** Fills `out` (HWC, values roughly in [0, 1]) with one image of class `label`. */
function drawImage(label: number, random: SeededRandom, out: Float32Array): void {
  // Background: a linear gradient between two random muted colours.
  const from = hsvToRgb(random.uniform(0, 1), random.uniform(0, 0.5), random.uniform(0.15, 0.85));
  const to = hsvToRgb(random.uniform(0, 1), random.uniform(0, 0.5), random.uniform(0.15, 0.85));
  const angle = random.uniform(0, 2 * PI);
  const gx = cos(angle) / IMAGE_WIDTH;
  const gy = sin(angle) / IMAGE_HEIGHT;

  // Foreground: the class shape in a colour near the class hue.
  const hue = label / NUM_CLASSES + HUE_JITTER * random.normal();
  const fg = hsvToRgb(hue, random.uniform(0.5, 1), random.uniform(0.45, 1));
  const cx = IMAGE_WIDTH / 2 + random.uniform(-CENTER_JITTER, CENTER_JITTER);
  const cy = IMAGE_HEIGHT / 2 + random.uniform(-CENTER_JITTER, CENTER_JITTER);
  const size = random.uniform(MIN_SIZE, MAX_SIZE);

  // Distractor: a small blob of a random colour somewhere in the image.
  const dc = hsvToRgb(random.uniform(0, 1), random.uniform(0, 1), random.uniform(0.2, 1));
  const dx = random.uniform(0, IMAGE_WIDTH);
  const dy = random.uniform(0, IMAGE_HEIGHT);
  const dr = random.uniform(1.5, 3.5);

  for (let y = 0; y < IMAGE_HEIGHT; y++) {
    for (let x = 0; x < IMAGE_WIDTH; x++) {
      const t = min(1, max(0, 0.5 + (x - IMAGE_WIDTH / 2) * gx + (y - IMAGE_HEIGHT / 2) * gy));
      let color: Rgb = [
        from[0] + (to[0] - from[0]) * t,
        from[1] + (to[1] - from[1]) * t,
        from[2] + (to[2] - from[2]) * t,
      ];
      if ((x - dx) ** 2 + (y - dy) ** 2 <= dr * dr) color = dc;
      if (insideShape(label, (x + 0.5 - cx) / size, (y + 0.5 - cy) / size)) color = fg;
      const offset = (y * IMAGE_WIDTH + x) * IMAGE_CHANNELS;
      for (let c = 0; c < IMAGE_CHANNELS; c++) out[offset + c] = color[c]! + NOISE_STDDEV * random.normal();
    }
  }
}

/** Whether the point (u, v), in units of the shape's half-extent around its centre, is on the shape. */
function insideShape(label: number, u: number, v: number): boolean {
  const au = abs(u);
  const av = abs(v);
  const r = hypot(u, v);
  const inBox = au <= 1 && av <= 1;
  switch (label) {
    case 0: // disk
      return r <= 1;
    case 1: // square
      return au <= 0.85 && av <= 0.85;
    case 2: // triangle, apex up
      return v <= 0.9 && v >= -1 && au <= (v + 1) / 2;
    case 3: // plus
      return (au <= 0.3 && av <= 1) || (av <= 0.3 && au <= 1);
    case 4: // ring
      return r <= 1 && r >= 0.6;
    case 5: // horizontal bars
      return inBox && floor((v + 1) * 2.5) % 2 === 0;
    case 6: // vertical bars
      return inBox && floor((u + 1) * 2.5) % 2 === 0;
    case 7: // X
      return inBox && (abs(u - v) <= 0.3 || abs(u + v) <= 0.3);
    case 8: // checkerboard
      return inBox && (floor((u + 1) * 2) + floor((v + 1) * 2)) % 2 === 0;
    case 9: // diamond
      return au + av <= 1;
    default:
      return false;
  }
}

/** HSV (hue in turns, wrapped) to RGB in [0, 1]. */
function hsvToRgb(hue: number, saturation: number, value: number): Rgb {
  const h = ((hue % 1) + 1) % 1;
  const sector = h * 6;
  const i = floor(sector);
  const f = sector - i;
  const p = value * (1 - saturation);
  const q = value * (1 - saturation * f);
  const t = value * (1 - saturation * (1 - f));
  switch (i % 6) {
    case 0:
      return [value, t, p];
    case 1:
      return [q, value, p];
    case 2:
      return [p, value, t];
    case 3:
      return [p, q, value];
    case 4:
      return [t, p, value];
    default:
      return [value, p, q];
  }
}
