// The map's renderer: every point in one gl.POINTS draw from one set of buffers; pan and zoom change only two
// uniforms, so a million points cost one draw call a frame. Also the cluster colours, shared with the legend.

// Cluster colours (matplotlib's tab10, then two more); points in no cluster are grey.
export const PALETTE = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
  [227, 119, 194], [188, 189, 34], [23, 190, 207], [127, 127, 127], [57, 59, 121], [173, 73, 74],
];
export const NONE = [200, 203, 210];
export const NEW = 1; // flag bits per point: a new model
export const LIT = 2; // highlighted (a search, focus or cluster match)

export const colourOf = (c) => (c < 0 ? NONE : PALETTE[c % PALETTE.length]);

// GLSL ES 1.00: runs on WebGL 2 and WebGL 1. Flags: bit 0 new (drawn larger, with a dark ring), bit 1 lit
// (a search, focus or cluster match: drawn larger while every other point is faded).
const VERTEX = `
  attribute float a_x; attribute float a_y; attribute vec4 a_color; attribute float a_flags;
  uniform vec2 u_scale; uniform vec2 u_offset; uniform float u_size; uniform float u_dim;
  varying vec4 v_color; varying float v_ring;
  void main() {
    gl_Position = vec4(a_x * u_scale.x + u_offset.x, a_y * u_scale.y + u_offset.y, 0.0, 1.0);
    float isNew = mod(a_flags, 2.0);
    float lit = step(2.0, a_flags);
    gl_PointSize = u_size * (1.0 + 0.5 * isNew) * (1.0 + 0.8 * lit * u_dim);
    v_color = vec4(a_color.rgb, mix(1.0, mix(0.18, 1.0, lit), u_dim));
    v_ring = isNew * step(5.0, gl_PointSize);
  }`;
const FRAGMENT = `
  precision mediump float;
  varying vec4 v_color; varying float v_ring;
  void main() {
    vec2 p = gl_PointCoord * 2.0 - 1.0;
    float r = dot(p, p);
    if (r > 1.0) discard;
    vec3 c = (v_ring > 0.5 && r > 0.5) ? vec3(0.12, 0.14, 0.2) : v_color.rgb;
    gl_FragColor = vec4(c, v_color.a);
  }`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

// The program, and buffers that load() fills (again when the layout is reloaded). draw() returns the number of
// points it drew: the vertex count it passed to gl.drawArrays.
export function makeRenderer(gl) {
  const prog = gl.createProgram();
  gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(prog);
  if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
  gl.useProgram(prog);
  const attribute = (name, size, type, normalized) => {
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    const loc = gl.getAttribLocation(prog, name);
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, size, type, normalized, 0, 0);
    return buf;
  };
  const xBuf = attribute("a_x", 1, gl.FLOAT, false);
  const yBuf = attribute("a_y", 1, gl.FLOAT, false);
  const colorBuf = attribute("a_color", 4, gl.UNSIGNED_BYTE, true);
  const flagBuf = attribute("a_flags", 1, gl.UNSIGNED_BYTE, false);
  const litBuf = gl.createBuffer(); // the lit points' numbers, drawn a second time so they sit on top
  let litCount = 0;
  let count = 0; // points in the buffers
  let flags = new Uint8Array(0);
  const u = (name) => gl.getUniformLocation(prog, name);
  const loc = { scale: u("u_scale"), offset: u("u_offset"), size: u("u_size"), dim: u("u_dim") };
  gl.enable(gl.BLEND);
  // Keep the canvas opaque: colour blends by alpha, the destination's alpha stays 1.
  gl.blendFuncSeparate(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA, gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
  const fill = (buf, data) => {
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
  };

  return {
    load(pts, colors, pointFlags, n) {
      fill(xBuf, pts.x);
      fill(yBuf, pts.y);
      fill(colorBuf, colors);
      fill(flagBuf, pointFlags);
      flags = pointFlags;
      // What the GPU now holds, read back (not n): the draw can never claim more points than were uploaded.
      gl.bindBuffer(gl.ARRAY_BUFFER, xBuf);
      count = Math.min(n, gl.getBufferParameter(gl.ARRAY_BUFFER, gl.BUFFER_SIZE) / 4); // float32 x per point
      this.setFlags(new Uint32Array(0));
    },
    setFlags(lit) {
      gl.bindBuffer(gl.ARRAY_BUFFER, flagBuf);
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, flags);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, litBuf);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, lit, gl.DYNAMIC_DRAW);
      litCount = lit.length;
    },
    draw(scale, offset, size, dim) {
      gl.viewport(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight);
      gl.clearColor(1, 1, 1, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.uniform2f(loc.scale, scale[0], scale[1]);
      gl.uniform2f(loc.offset, offset[0], offset[1]);
      gl.uniform1f(loc.size, size);
      gl.uniform1f(loc.dim, dim ? 1 : 0);
      gl.drawArrays(gl.POINTS, 0, count);
      if (dim && litCount) {
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, litBuf);
        gl.drawElements(gl.POINTS, litCount, gl.UNSIGNED_INT, 0);
      }
      return count; // the vertex count just drawn
    },
  };
}

export function context(canvas) {
  const opts = { antialias: false, alpha: false, preserveDrawingBuffer: false };
  const gl2 = canvas.getContext("webgl2", opts);
  if (gl2) return gl2;
  const gl1 = canvas.getContext("webgl", opts);
  if (gl1 && gl1.getExtension("OES_element_index_uint")) return gl1; // 32-bit indices for the lit points
  return null;
}
