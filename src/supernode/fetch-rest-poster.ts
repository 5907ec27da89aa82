/**
 * The RestPoster over the Fetch API, for a SuperNode in a web page (or any runtime whose `fetch`
 * trusts the SuperLink's certificate). The browser owns TLS and connection reuse, so `close()`
 * only cancels calls in flight. Failures are FleetCallErrors with gRPC status codes, as with
 * node-rest-poster.ts.
 */
import { CallStatus, FleetCallError } from "./fleet-transport";
import type { ClosableRestPoster, RestResponse } from "./rest-connection";

/** The part of the Fetch API a poster needs (a page passes `fetch.bind(globalThis)`). */
export type FetchFunction = (url: string, init: RequestInit) => Promise<Response>;

export function createFetchRestPoster(fetchFn: FetchFunction): ClosableRestPoster {
  const inFlight = new Set<AbortController>();
  const post = async (
    url: string,
    body: Uint8Array,
    headers: Record<string, string>,
    control: { signal?: AbortSignal; deadlineMs?: number },
  ): Promise<RestResponse> => {
    const cancel = new AbortController();
    const deadline = { expired: false };
    const onAbort = (): void => {
      cancel.abort();
    };
    control.signal?.addEventListener("abort", onAbort, { once: true });
    const timer =
      control.deadlineMs !== undefined
        ? setTimeout(
            () => {
              deadline.expired = true;
              cancel.abort();
            },
            Math.max(0, control.deadlineMs),
          )
        : undefined;
    inFlight.add(cancel);
    try {
      if (control.signal?.aborted) throw new FleetCallError(CallStatus.CANCELLED, "Call cancelled");
      // A copy with its own ArrayBuffer: fetch takes the whole buffer of a view.
      const payload = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength ? body : body.slice();
      const answer = await fetchFn(url, {
        method: "POST",
        body: payload as Uint8Array<ArrayBuffer>,
        headers,
        signal: cancel.signal,
        credentials: "omit",
      });
      const bytes = new Uint8Array(await answer.arrayBuffer());
      return { status: answer.status, header: (name) => answer.headers.get(name) ?? undefined, body: bytes };
    } catch (err) {
      if (err instanceof FleetCallError) throw err;
      if (deadline.expired)
        throw new FleetCallError(CallStatus.DEADLINE_EXCEEDED, "Deadline exceeded", undefined, { cause: err });
      if (cancel.signal.aborted)
        throw new FleetCallError(CallStatus.CANCELLED, "Call cancelled", undefined, { cause: err });
      // fetch says only "Failed to fetch" (TLS, DNS, refused, CORS alike): the console has details.
      const detail = err instanceof Error ? err.message : String(err);
      throw new FleetCallError(
        CallStatus.UNAVAILABLE,
        `${detail} (POST ${url}; the browser console tells whether TLS, CORS or the network failed)`,
        undefined,
        {
          cause: err,
        },
      );
    } finally {
      clearTimeout(timer);
      control.signal?.removeEventListener("abort", onAbort);
      inFlight.delete(cancel);
    }
  };
  return {
    post,
    close() {
      for (const c of inFlight) c.abort();
      inFlight.clear();
    },
  };
}
