/**
 * Uploads a file as the raw request body with progress (XMLHttpRequest: fetch reports no upload
 * progress). The browser streams the File from disk; nothing is read whole into memory here.
 */
import { ApiError, toLogin } from './client';

export interface Upload<T> {
  /** Resolves with the parsed JSON answer; rejects with ApiError. */
  done: Promise<T>;
  abort(): void;
}

/** POSTs `file` to `path` as application/octet-stream; `onProgress(sent, total)` as bytes go out. */
export function uploadRaw<T>(path: string, file: Blob, onProgress: (sent: number, total: number) => void): Upload<T> {
  const xhr = new XMLHttpRequest();
  const done = new Promise<T>((resolve, reject) => {
    xhr.open('POST', path);
    xhr.withCredentials = true;
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was interrupted (network error or the server closed the connection)'));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'upload cancelled'));
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body as T);
      if (xhr.status === 401) toLogin();
      const e = (body as { error?: { code?: string; message?: string } } | null)?.error;
      const { code, message, ...details } = e ?? {};
      reject(new ApiError(xhr.status, code ?? `http_${xhr.status}`, message ?? `HTTP ${xhr.status}`, details));
    };
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}
