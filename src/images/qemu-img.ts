import type { ContainerFormat } from './detect.js';
import { ImportError } from './import-error.js';
import { startTool, type ToolBounds } from './tool.js';

interface QemuImgInfo {
  'virtual-size': number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type: string; data?: { 'data-file'?: string; 'create-type'?: string; extents?: Array<{ filename: string }> } };
}

/**
 * The virtual size of a downloaded container, after refusing every kind that would make qemu-img
 * read another file on this machine (a hostile image could name /etc/shadow or another export):
 * a backing file, a qcow2 external data file, a VMDK whose extents live in other files.
 */
export async function inspectContainer(file: string, format: ContainerFormat, bounds: ToolBounds): Promise<number> {
  const { code, stdout, stderr } = await runQemuImg(['info', '--output=json', '-f', format, file], bounds);
  if (code !== 0) throw new ImportError('bad-image', `the ${format} image is not valid: ${stderr.trim()}`);
  const info = JSON.parse(stdout) as QemuImgInfo;
  const backing = info['backing-filename'] ?? info['full-backing-filename'];
  if (backing !== undefined)
    throw new ImportError(
      'backing-file',
      `the ${format} image has a backing file (${backing}): it would read another file on this machine, so it is refused; import a standalone image (qemu-img convert it, or rebase it without -u)`,
    );
  const specific = info['format-specific']?.data;
  if (specific?.['data-file'] !== undefined)
    throw new ImportError(
      'backing-file',
      `the qcow2 image keeps its data in another file (${specific['data-file']}), so it is refused; import a standalone image`,
    );
  const foreignExtent = specific?.extents?.find((extent) => extent.filename !== file);
  if (foreignExtent !== undefined)
    throw new ImportError(
      'backing-file',
      `the vmdk image reads its data from another file (${foreignExtent.filename}), so it is refused; import a single-file (monolithic) vmdk`,
    );
  return info['virtual-size'];
}

/** `qemu-img convert -O raw -S 4k` (sparse), reporting the fraction done; `watch` runs every half second and may throw to stop it. */
export async function convertToRaw(
  file: string,
  format: ContainerFormat,
  out: string,
  bounds: ToolBounds,
  onFraction: (fraction: number) => void,
  watch: () => void,
): Promise<void> {
  const watchdog = new AbortController();
  const timer = setInterval(() => {
    try {
      watch();
    } catch (err) {
      watchdog.abort(err);
    }
  }, 500);
  try {
    const signal = AbortSignal.any([bounds.signal, watchdog.signal]);
    const { code, stderr } = await runQemuImg(
      ['convert', '-p', '-f', format, '-O', 'raw', '-S', '4k', file, out],
      { ...bounds, signal },
      (text) => {
        const percent = /\(([\d.]+)\/100%\)\s*$/.exec(text)?.[1];
        if (percent !== undefined) onFraction(Number(percent) / 100);
      },
    );
    if (code !== 0) {
      if (/No space left|Disk quota/i.test(stderr))
        throw new ImportError(
          'no-space',
          'the image store ran out of space while converting the image: free space there, then import again',
        );
      throw new ImportError('bad-image', `qemu-img could not convert the ${format} image: ${stderr.trim()}`);
    }
  } finally {
    clearInterval(timer);
  }
}

/** Runs qemu-img to its end under the import's bounds; its stdout is collected, or handed to `onStdout` as it comes. */
async function runQemuImg(
  args: string[],
  bounds: ToolBounds,
  onStdout?: (text: string) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const tool = startTool('qemu-img', args, bounds, null);
  let stdout = '';
  tool.child.stdout.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    if (onStdout) onStdout(text);
    else stdout += text;
  });
  const { code, stderr } = await tool.exited;
  return { code, stdout, stderr };
}
