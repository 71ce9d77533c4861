/**
 * Navigation icons as inline SVG (24×24, stroked with currentColor, so they follow the theme). Drawn
 * here from basic shapes: no icon font, nothing from a CDN (the CSP allows neither).
 */
import { h, type VNode } from 'vue';

type Shape = ['path', string] | ['rect', number, number, number, number, number?] | ['circle', number, number, number];

const SHAPES = {
  dashboard: [
    ['rect', 3, 3, 7, 9, 1],
    ['rect', 14, 3, 7, 5, 1],
    ['rect', 14, 12, 7, 9, 1],
    ['rect', 3, 16, 7, 5, 1],
  ],
  agents: [
    ['rect', 3, 4, 18, 6, 1.5],
    ['rect', 3, 14, 18, 6, 1.5],
    ['path', 'M7 7h.01M7 17h.01'],
  ],
  run: [['path', 'M7 4l13 8-13 8z']],
  library: [
    ['path', 'M4 19.5A2.5 2.5 0 0 1 6.5 17H20V3H6.5A2.5 2.5 0 0 0 4 5.5z'],
    ['path', 'M4 19.5A2.5 2.5 0 0 0 6.5 22H20v-5'],
  ],
  schedules: [
    ['circle', 12, 12, 9],
    ['path', 'M12 7v5l3 2'],
  ],
  history: [
    ['path', 'M3 12a9 9 0 1 0 3-6.7L3 8'],
    ['path', 'M3 3v5h5'],
    ['path', 'M12 8v4l3 2'],
  ],
  files: [
    ['path', 'M14 3H6a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9z'],
    ['path', 'M14 3v6h6'],
  ],
  terminals: [
    ['rect', 2, 4, 20, 16, 2],
    ['path', 'M6 9l3 3-3 3M12 15h5'],
  ],
  recordings: [
    ['circle', 12, 12, 9],
    ['path', 'M10 8.5l5 3.5-5 3.5z'],
  ],
  updates: [
    ['path', 'M12 3v12M7 10l5 5 5-5'],
    ['path', 'M4 17v2a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-2'],
  ],
  admin: [['path', 'M12 2l8 4v6c0 5-3.5 8.5-8 10-4.5-1.5-8-5-8-10V6z']],
  tokens: [
    ['circle', 7.5, 15.5, 4.5],
    ['path', 'M10.7 12.3L21 2M16 7l3 3M18 5l2 2'],
  ],
} satisfies Record<string, Shape[]>;

export type IconName = keyof typeof SHAPES;

/** The icon as an SVG VNode (aria-hidden: the label next to it says what it is). */
export function icon(name: IconName, size = 18): VNode {
  const children = (SHAPES[name] as Shape[]).map((s) => {
    if (s[0] === 'path') return h('path', { d: s[1] });
    if (s[0] === 'rect') return h('rect', { x: s[1], y: s[2], width: s[3], height: s[4], rx: s[5] ?? 0 });
    return h('circle', { cx: s[1], cy: s[2], r: s[3] });
  });
  return h(
    'svg',
    {
      viewBox: '0 0 24 24',
      width: size,
      height: size,
      fill: 'none',
      stroke: 'currentColor',
      'stroke-width': 2,
      'stroke-linecap': 'round',
      'stroke-linejoin': 'round',
      'aria-hidden': 'true',
      'data-icon': name,
    },
    children,
  );
}
