/**
 * Keeps the page's SuperNode key pair in IndexedDB (this origin, this browser profile), so a
 * reload reuses the key the SuperLink's allowlist knows. Like a key file on disk: anyone with
 * access to the profile can read it.
 */
import type { WebKeyPair } from "../auth/web-keys";

const DB_NAME = "flwr-browser-supernode";
const STORE = "keys";
const KEY_ID = "supernode";

export interface StoredKey extends WebKeyPair {
  /** Where the key came from ("generated in this page", or the file names). */
  origin: string;
  savedAt: string;
}

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => {
      resolve(request.result);
    };
    request.onerror = () => {
      reject(request.error ?? new Error("IndexedDB open failed"));
    };
  });
}

async function transact<T>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await open();
  try {
    return await new Promise<T>((resolve, reject) => {
      const request = run(db.transaction(STORE, mode).objectStore(STORE));
      request.onsuccess = () => {
        resolve(request.result as T);
      };
      request.onerror = () => {
        reject(request.error ?? new Error("IndexedDB request failed"));
      };
    });
  } finally {
    db.close();
  }
}

export function loadStoredKey(): Promise<StoredKey | undefined> {
  return transact<StoredKey | undefined>("readonly", (s) => s.get(KEY_ID));
}

export async function saveStoredKey(key: StoredKey): Promise<void> {
  await transact("readwrite", (s) => s.put(key, KEY_ID));
}

export async function forgetStoredKey(): Promise<void> {
  await transact("readwrite", (s) => s.delete(KEY_ID));
}
