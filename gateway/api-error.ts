import { KvError } from '../common/errors';
import type { ApiErrorCode } from '../common/rest-api';

export type { ApiErrorCode };

/** An error meant for the client: the status and a JSON body `{ error: { code, message } }`. */
export class ApiError extends KvError {
  constructor(
    readonly status: number,
    readonly apiCode: ApiErrorCode,
    message: string,
    context: Record<string, unknown> = {},
  ) {
    super(apiCode, message, context);
  }

  toBody(): { error: { code: ApiErrorCode; message: string } } {
    return { error: { code: this.apiCode, message: this.message } };
  }
}
