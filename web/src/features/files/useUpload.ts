/** One revision upload at a time: the picked file, the size check against the server's limit, progress, cancel. */
import { computed, onBeforeUnmount, ref, shallowRef, type Ref } from 'vue';
import type { FileRevisionView } from '../../../../protocol/file-views';
import { errorText } from '../../api/client';
import { uploadRaw, type Upload } from '../../api/upload';
import { bytes } from '../../ui/format';

export function useUpload(maxBytes: Readonly<Ref<number | null | undefined>>) {
  const file = shallowRef<File | null>(null);
  const sent = ref(0);
  const busy = ref(false);
  const error = ref('');
  let current: Upload<FileRevisionView> | null = null;

  /** Checked before anything is sent: the server would refuse it with 413 after the headers anyway. */
  const tooLarge = computed(() =>
    file.value && maxBytes.value != null && file.value.size > maxBytes.value
      ? `${file.value.name} is ${bytes(file.value.size)}; the server takes revisions up to ${bytes(maxBytes.value)} (MUSTER_FILE_MAX_BYTES)`
      : '',
  );
  const percent = computed(() => (file.value?.size ? Math.min(100, Math.round((sent.value / file.value.size) * 100)) : busy.value ? 0 : 100));

  function pick(ev: Event) {
    file.value = (ev.target as HTMLInputElement).files?.[0] ?? null;
    error.value = '';
    sent.value = 0;
  }

  /** Uploads the picked file as the next revision of `fileId`; null when nothing was uploaded (see `error`). */
  async function start(fileId: string): Promise<FileRevisionView | null> {
    const f = file.value;
    if (!f || tooLarge.value || busy.value) return null;
    busy.value = true;
    error.value = '';
    sent.value = 0;
    try {
      current = uploadRaw<FileRevisionView>(`/api/files/${encodeURIComponent(fileId)}/revisions`, f, (n) => (sent.value = n));
      const rev = await current.done;
      file.value = null;
      return rev;
    } catch (err) {
      error.value = errorText(err);
      return null;
    } finally {
      current = null;
      busy.value = false;
    }
  }

  const cancel = () => current?.abort();
  onBeforeUnmount(cancel);
  return { file, sent, busy, error, tooLarge, percent, pick, start, cancel };
}
